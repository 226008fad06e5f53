/**
 * Hostile inbound values: random grpc-timeout, ctx-timeout, ctx-deadline, ctx-cancel-reason and
 * traceparent (repeated, malformed, huge) sent over a raw HTTP/2 session, and random
 * ctx-cancel-reason trailers sent back to a ctxflow client. Nothing may crash, hang or stretch a
 * deadline past what was sent or past maxInboundMs.
 */
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import { after, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import fc from 'fast-check';
import { toContextError } from '../adapters/grpc/index.ts';
import { current } from '../sdk/context.ts';
import { ContextDoneError } from '../sdk/errors.ts';
import { DEFAULT_MAX_INBOUND_MS } from '../sdk/wire.ts';
import {
  type Message,
  probeClient,
  rawCall,
  ready,
  startProbeServer,
  type TestServer,
  unary,
} from './support/grpc.ts';

const UNARY = '/ctxflow.test.Probe/Unary';
const STREAMING = [UNARY, ...['ServerStream', 'ClientStream', 'Bidi'].map((m) => `/ctxflow.test.Probe/${m}`)];
const RUNS = Number(process.env.CTXFLOW_FUZZ_RUNS ?? 300);
// grpc-js logs each metadata value it refuses (tabs, Latin-1): expected here, and noisy.
grpc.setLogVerbosity(grpc.logVerbosity.NONE);

/** Header-safe characters for node:http2 (tab, printable ASCII, Latin-1). */
const headerChar = fc
  .oneof(
    { weight: 8, arbitrary: fc.integer({ min: 0x20, max: 0x7e }) },
    { weight: 1, arbitrary: fc.constant(0x09) },
    { weight: 1, arbitrary: fc.integer({ min: 0x80, max: 0xff }) },
  )
  .map((code) => String.fromCharCode(code));
const headerString = fc.string({ unit: headerChar, maxLength: 40 });
const digitsString = fc.stringMatching(/^[0-9]{0,20}$/);

const grpcTimeout = fc.oneof(
  headerString,
  fc.tuple(digitsString, fc.constantFrom('H', 'M', 'S', 'm', 'u', 'n', '', 'x', ' m')).map(([d, u]) => d + u),
  fc.constantFrom('99999999H', '2147484S', '0n', '0m', '1n', '-1m', ' 5m', '5 m', '1e3m', '0x10m', '+5m', ''),
);
const ctxTimeout = fc.oneof(
  headerString,
  digitsString,
  fc.integer({ min: -10, max: 200_000 }).map(String),
  fc.constantFrom('0', '99999999', '999999999', '1.5', '-0', ' 100 ', '1e3'),
);
const ctxDeadline = fc.oneof(
  headerString,
  digitsString,
  fc.integer({ min: -120_000, max: 3_600_000 }).map((offset) => String(Date.now() + offset)),
  fc.constantFrom('0', '9999999999999', '99999999999999', String(Number.MAX_SAFE_INTEGER)),
);
const reason = fc.oneof(
  headerString,
  fc.stringMatching(/^[a-z][a-z0-9_.-]{0,70}( [A-Za-z0-9 _.,:;/()=+#@%-]{0,140})?$/),
);
const traceparent = fc.oneof(
  headerString,
  fc.constantFrom(
    '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
    '00-00000000000000000000000000000000-b7ad6b7169203331-01',
    'ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
  ),
);

/** Absent, one value, or the header repeated. */
function maybeRepeated(value: fc.Arbitrary<string>): fc.Arbitrary<string | string[] | undefined> {
  return fc.oneof(
    { weight: 2, arbitrary: fc.constant(undefined) },
    { weight: 5, arbitrary: value },
    { weight: 1, arbitrary: fc.array(value, { minLength: 2, maxLength: 3 }) },
  );
}

const inbound = fc.record({
  'grpc-timeout': fc.option(grpcTimeout, { nil: undefined }),
  'ctx-timeout': maybeRepeated(ctxTimeout),
  'ctx-deadline': maybeRepeated(ctxDeadline),
  'x-envoy-expected-rq-timeout-ms': maybeRepeated(ctxTimeout),
  'connect-timeout-ms': maybeRepeated(ctxTimeout),
  'ctx-cancel-reason': maybeRepeated(reason),
  traceparent: maybeRepeated(traceparent),
});

function defined(headers: Record<string, string | string[] | undefined>): http2.OutgoingHttpHeaders {
  return Object.fromEntries(Object.entries(headers).filter(([, value]) => value !== undefined));
}

/** The budget a well-formed ctx-timeout grants, in ms, or undefined when it is not one. */
function ctxTimeoutMs(value: string | string[] | undefined): number | undefined {
  return typeof value === 'string' && /^\s*[0-9]{1,8}\s*$/.test(value) ? Number(value) : undefined;
}

describe('grpc: hostile inbound metadata', () => {
  let server: TestServer;
  let session: http2.ClientHttp2Session;
  interface Seen {
    deadline: number | undefined;
    at: number;
    transportDeadline: number;
    ctxTimeout: string | string[] | undefined;
    envoyTimeout: string | string[] | undefined;
  }
  const seen: Seen[] = [];

  before(async () => {
    server = await startProbeServer({
      unary: (call: grpc.ServerUnaryCall<unknown, unknown>) => {
        const ctx = current();
        const transport = call.getDeadline();
        const ctxTimeout = call.metadata.get('ctx-timeout').map(String);
        const envoyTimeout = call.metadata.get('x-envoy-expected-rq-timeout-ms').map(String);
        seen.push({
          deadline: ctx.deadline,
          at: Date.now(),
          transportDeadline: transport instanceof Date ? transport.getTime() : transport,
          ctxTimeout: ctxTimeout.length === 1 ? ctxTimeout[0] : ctxTimeout,
          envoyTimeout: envoyTimeout.length === 1 ? envoyTimeout[0] : envoyTimeout,
        });
        return { ok: true };
      },
      serverStream: (call) => {
        call.write({ remaining: current().remaining() });
        call.end();
      },
      clientStream: async (call: grpc.ServerReadableStream<Message, Message>) => {
        let count = 0;
        for await (const _ of call) count++;
        return { count, remaining: current().remaining() };
      },
      bidi: (call) => {
        call.on('data', () => call.write({ remaining: current().remaining() }));
        call.on('end', () => call.end());
      },
    });
    session = http2.connect(`http://${server.address}`);
    session.on('error', () => {});
  });

  after(async () => {
    session.close();
    await server.close();
  });

  test('random grpc-timeout, ctx-*, Envoy and Connect values never crash, hang or stretch the deadline', async () => {
    await fc.assert(
      fc.asyncProperty(inbound, fc.constantFrom(...STREAMING), async (headers, path) => {
        const before = seen.length;
        const answer = await rawCall(session, path, defined(headers));
        assert.notEqual(answer.status, undefined, 'every call gets a grpc-status');
        if (path !== UNARY || seen.length === before) return; // streams, or refused (bad grpc-timeout, expired)
        const { deadline, at, transportDeadline, ctxTimeout, envoyTimeout } = seen.at(-1) as Seen;
        if (deadline === undefined) {
          assert.equal(transportDeadline, Number.POSITIVE_INFINITY);
          return;
        }
        assert.ok(Number.isFinite(deadline), `deadline ${deadline}`);
        assert.ok(deadline <= at + DEFAULT_MAX_INBOUND_MS, `over the cap: ${deadline - at} ms`);
        // Never later than the transport's deadline (grpc-timeout, as grpc-js read it) nor than a
        // well-formed ctx-timeout as it arrived (HTTP/2 may drop a value it finds malformed).
        assert.ok(
          deadline <= transportDeadline,
          `grpc-timeout stretched by ${deadline - transportDeadline} ms`,
        );
        const granted = ctxTimeoutMs(ctxTimeout);
        if (granted !== undefined) assert.ok(deadline <= at + granted, `ctx-timeout ${granted} stretched`);
        const envoy = ctxTimeoutMs(envoyTimeout);
        if (envoy !== undefined && envoy > 0) assert.ok(deadline <= at + envoy, `Envoy's ${envoy} stretched`);
      }),
      { numRuns: RUNS },
    );
    // Still serving.
    const client = probeClient(server.address);
    try {
      assert.deepEqual(await unary(client), { ok: true });
    } finally {
      client.close();
    }
  });

  test('a grpc-timeout of 2^31 ms or more, which grpc-js wraps, ends the call at once', async () => {
    const before = seen.length;
    // About 24.9 days. grpc-js computes (value * unit) | 0, which comes out negative here: the
    // deadline is already past when ctxflow reads it, and the call is shed (see docs/grpc.md).
    const answer = await rawCall(session, UNARY, { 'grpc-timeout': '2147484S' });
    assert.equal(answer.status, grpc.status.DEADLINE_EXCEEDED);
    assert.equal(seen.length, before);
  });
});

describe('grpc: hostile ctx-cancel-reason from a server', () => {
  let server: TestServer;
  let next: { code: number; reason: string | undefined } = { code: grpc.status.CANCELLED, reason: undefined };

  before(async () => {
    // A server without ctxflow, answering whatever status and reason the property asks for.
    server = await startProbeServer(
      {
        unary: (_call, callback) => {
          const metadata = new grpc.Metadata();
          if (next.reason !== undefined) metadata.set('ctx-cancel-reason', next.reason);
          callback?.({ code: next.code, details: 'fuzz', metadata });
        },
      },
      { ctxflow: false, wrap: false },
    );
  });

  after(() => server.close());

  test('the client turns any reason into a typed error or leaves the error alone, never throws', async () => {
    const client = probeClient(server.address);
    await ready(client);
    try {
      const printable = fc.string({
        unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)),
        maxLength: 250,
      });
      await fc.assert(
        fc.asyncProperty(
          fc.constantFrom(grpc.status.CANCELLED, grpc.status.DEADLINE_EXCEEDED, grpc.status.UNAVAILABLE),
          fc.option(fc.oneof(printable, fc.stringMatching(/^[a-z][a-z0-9_]{0,10}( [a-z ]{1,20})?$/)), {
            nil: undefined,
          }),
          async (code, value) => {
            next = { code, reason: value?.trim() === '' ? undefined : value?.trim() };
            const error = await unary(client).catch((e: unknown) => e);
            if (code === grpc.status.UNAVAILABLE) {
              assert.equal(toContextError(error), undefined);
              return;
            }
            assert.ok(error instanceof ContextDoneError, String(error));
            assert.match(error.cause.code, /^[a-z][a-z0-9_.-]*$/);
          },
        ),
        { numRuns: Math.min(RUNS, 200) },
      );
    } finally {
      client.close();
    }
  });
});
