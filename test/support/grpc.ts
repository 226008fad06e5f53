/**
 * A small gRPC service for the tests, without .proto: JSON messages over grpc-js's generic client
 * and server, one method of each kind. Servers listen on 127.0.0.1 on an ephemeral port.
 */
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import * as grpc from '@grpc/grpc-js';
import {
  type ClientInterceptorOptions,
  clientOptions,
  type GrpcContextError,
  grpcStatusFor,
  type ResetGuard,
  resetGuard,
  type ServerInterceptorOptions,
  serverInterceptor,
  wrapService,
} from '../../adapters/grpc/index.ts';
import { type Context, ContextDoneError, current } from '../../sdk/index.ts';
import { jsonMethod, serialize } from './json-method.ts';

// biome-ignore lint/suspicious/noExplicitAny: test messages are free-form JSON
export type Message = Record<string, any>;

function method(name: string, requestStream: boolean, responseStream: boolean) {
  return jsonMethod(`/ctxflow.test.Probe/${name}`, requestStream, responseStream);
}

/** The Probe service: Unary, ServerStream, ClientStream and Bidi, all JSON. */
export const probeService = {
  unary: method('Unary', false, false),
  serverStream: method('ServerStream', false, true),
  clientStream: method('ClientStream', true, false),
  bidi: method('Bidi', true, true),
} satisfies grpc.ServiceDefinition;

export type ProbeImplementation = {
  unary?:
    | grpc.handleUnaryCall<Message, Message>
    | ((call: grpc.ServerUnaryCall<Message, Message>) => unknown);
  serverStream?: grpc.handleServerStreamingCall<Message, Message>;
  clientStream?:
    | grpc.handleClientStreamingCall<Message, Message>
    | ((call: grpc.ServerReadableStream<Message, Message>) => unknown);
  bidi?: grpc.handleBidiStreamingCall<Message, Message>;
};

export const ProbeClient = grpc.makeGenericClientConstructor(probeService, 'Probe');
export type ProbeClient = InstanceType<typeof ProbeClient> & {
  unary(
    request: Message,
    metadata: grpc.Metadata,
    options: grpc.CallOptions,
    callback: (error: grpc.ServiceError | null, response?: Message) => void,
  ): grpc.ClientUnaryCall;
  serverStream(
    request: Message,
    metadata?: grpc.Metadata,
    options?: grpc.CallOptions,
  ): grpc.ClientReadableStream<Message>;
  clientStream(
    metadata: grpc.Metadata,
    options: grpc.CallOptions,
    callback: (error: grpc.ServiceError | null, response?: Message) => void,
  ): grpc.ClientWritableStream<Message>;
  bidi(metadata?: grpc.Metadata, options?: grpc.CallOptions): grpc.ClientDuplexStream<Message, Message>;
};

const notImplemented = (_call: unknown, callback?: (error: unknown) => void) => {
  callback?.({ code: grpc.status.UNIMPLEMENTED, details: 'not in this test' });
};

export interface TestServer {
  server: grpc.Server;
  port: number;
  address: string;
  close(): Promise<void>;
}

/**
 * How test servers bind calls to contexts: `interceptor` (serverInterceptor() with wrapService()),
 * or `wrapService` alone, which builds each call's context itself.
 */
export type ServerBinding = 'interceptor' | 'wrapService';
let binding: ServerBinding = 'interceptor';

/** Sets how the Probe servers started from now on bind their calls; a suite sets it before it loads. */
export function useServerBinding(next: ServerBinding): void {
  binding = next;
}

/** How the Probe servers bind their calls. */
export function serverBinding(): ServerBinding {
  return binding;
}

export interface ServerSetup {
  /** ctxflow's server options (serverInterceptor's or wrapService's); `false` for a server without ctxflow. */
  ctxflow?: ServerInterceptorOptions | false;
  /** Register the implementation through wrapService (default true; never without ctxflow). */
  wrap?: boolean;
  /** resetGuard() limits; `true` for its defaults. Default: Node's own guard. */
  resetGuard?: Partial<ResetGuard> | true;
}

/**
 * Starts a Probe server on 127.0.0.1 with serverInterceptor and wrapService (unless `wrap: false`),
 * or with wrapService alone under the `wrapService` binding.
 */
export async function startProbeServer(
  impl: ProbeImplementation,
  setup: ServerSetup = {},
): Promise<TestServer> {
  const intercepted = setup.ctxflow !== false && binding === 'interceptor';
  const server = new grpc.Server(
    intercepted ? { interceptors: [serverInterceptor(setup.ctxflow || {})] } : {},
  );
  if (setup.resetGuard !== undefined) resetGuard(server, setup.resetGuard === true ? {} : setup.resetGuard);
  const full = {
    unary: impl.unary ?? notImplemented,
    serverStream: impl.serverStream ?? notImplemented,
    clientStream: impl.clientStream ?? notImplemented,
    bidi: impl.bidi ?? notImplemented,
  };
  server.addService(
    probeService,
    setup.ctxflow === false || !(setup.wrap ?? true)
      ? (full as grpc.UntypedServiceImplementation)
      : wrapService(full, intercepted ? {} : setup.ctxflow),
  );
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (error, bound) =>
      error ? reject(error) : resolve(bound),
    ),
  );
  return {
    server,
    port,
    address: `127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.tryShutdown(() => resolve());
        // Calls left hanging by a test must not keep the server open.
        setTimeout(() => server.forceShutdown(), 500).unref();
      }),
  };
}

/** A Probe client with clientOptions() (or none with `ctxflow: false`). */
export function probeClient(address: string, options: ClientInterceptorOptions | false = {}): ProbeClient {
  return new ProbeClient(
    address,
    grpc.credentials.createInsecure(),
    options === false ? {} : clientOptions(options),
  ) as ProbeClient;
}

/** Unary call as a promise. */
export function unary(
  client: ProbeClient,
  request: Message = {},
  options: grpc.CallOptions = {},
  metadata: grpc.Metadata = new grpc.Metadata(),
): Promise<Message> {
  return new Promise((resolve, reject) => {
    client.unary(request, metadata, options, (error, response) =>
      error ? reject(error) : resolve(response ?? {}),
    );
  });
}

/** Waits for the client's channel to connect, so tests measure calls rather than the connection. */
export async function ready(client: grpc.Client): Promise<void> {
  await new Promise<void>((resolve, reject) =>
    client.waitForReady(Date.now() + 5000, (error) => (error ? reject(error) : resolve())),
  );
}

/** Collects a readable client stream: its messages, and its error (or undefined when it ended OK). */
export async function collect(
  stream: grpc.ClientReadableStream<Message>,
): Promise<{ messages: Message[]; error: unknown }> {
  const messages: Message[] = [];
  let error: unknown;
  stream.on('data', (message: Message) => messages.push(message));
  stream.on('error', (e) => {
    error = e;
  });
  // Not events.once: it rejects on 'error', which comes before 'status'.
  await new Promise((resolve) => stream.on('status', resolve));
  return { messages, error };
}

/** What a raw gRPC call got back. */
export interface RawAnswer {
  /** grpc-status from the trailers (or a trailers-only response); undefined when none came. */
  status: number | undefined;
  headers: http2.IncomingHttpHeaders;
  trailers: http2.IncomingHttpHeaders;
  body: Buffer;
}

/**
 * One gRPC call over a raw HTTP/2 session, with headers exactly as given (arrays send the header
 * repeatedly), so tests can send what grpc-js clients refuse to: malformed grpc-timeout and the like.
 */
export function rawCall(
  session: http2.ClientHttp2Session,
  path: string,
  headers: http2.OutgoingHttpHeaders,
  message: Message = {},
  timeoutMs = 5000,
): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    const request = session.request({
      ':method': 'POST',
      ':path': path,
      'content-type': 'application/grpc',
      te: 'trailers',
      ...headers,
    });
    const timer = setTimeout(() => {
      request.close(http2.constants.NGHTTP2_CANCEL);
      reject(new Error(`no answer within ${timeoutMs} ms`));
    }, timeoutMs);
    const answer: RawAnswer = { status: undefined, headers: {}, trailers: {}, body: Buffer.alloc(0) };
    const chunks: Buffer[] = [];
    request.on('response', (responseHeaders) => {
      answer.headers = responseHeaders;
      if (responseHeaders['grpc-status'] !== undefined)
        answer.status = Number(responseHeaders['grpc-status']);
    });
    request.on('trailers', (trailers) => {
      answer.trailers = trailers;
      if (trailers['grpc-status'] !== undefined) answer.status = Number(trailers['grpc-status']);
    });
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('error', () => {});
    request.on('close', () => {
      clearTimeout(timer);
      answer.body = Buffer.concat(chunks);
      resolve(answer);
    });
    const payload = serialize(message);
    const frame = Buffer.alloc(5 + payload.length);
    frame.writeUInt8(0, 0);
    frame.writeUInt32BE(payload.length, 1);
    payload.copy(frame, 5);
    request.end(frame);
  });
}

/** A promise resolved by `resolve()`: for handlers that report what they saw. */
export function deferred<T = void>(): { promise: Promise<T>; resolve(value: T): void } {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

/** What a handler saw when it started: the context it runs in, its deadline, and when. */
export interface HandlerHop {
  name: string;
  ctx: Context;
  signal: AbortSignal;
  deadline: number | undefined;
  at: number;
}

/** Records the current context at the start of a handler, into `hops`. */
export function recordHop(hops: HandlerHop[], name: string): HandlerHop {
  const ctx = current();
  const hop = { name, ctx, signal: ctx.signal, deadline: ctx.deadline, at: Date.now() };
  hops.push(hop);
  return hop;
}

/**
 * Asserts that a gRPC call's error reports the local context's end: the same kind and cause as
 * `ctx.error`, with the gRPC status for it (`err.code`), as a grpc-js caller checks it.
 */
export function assertEndedBy(error: unknown, ctx: Context): void {
  const expected = ctx.error;
  assert.ok(expected, 'the context has ended');
  assert.ok(error instanceof ContextDoneError, String(error));
  assert.equal(error.name, expected.name);
  assert.deepEqual(error.cause, expected.cause);
  assert.equal((error as GrpcContextError).code, grpcStatusFor(expected.cause.code));
}
