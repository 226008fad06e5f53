/**
 * init() with tracing on (spans kept in memory) and grpc-js left unchanged: OpenTelemetry's grpc
 * instrumentation makes the client spans, for generated clients and for plain `grpc.Client` calls
 * alike, under ctxflow's hooks; the budget sent is on the client span, and the server span is its
 * child.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { SpanKind, trace } from '@opentelemetry/api';
import { InMemorySpanExporter, type ReadableSpan, SimpleSpanProcessor } from '@opentelemetry/sdk-trace';
import { init } from '../init/index.ts';
import { ATTR_BUDGET_SENT } from '../sdk/tracing.ts';

const exporter = new InMemorySpanExporter();
const telemetry = init({
  serviceName: 'init-grpc-otel',
  spanProcessors: [new SimpleSpanProcessor({ exporter })],
});

const grpc = await import('@grpc/grpc-js');
const { background, current, withTimeout } = await import('../sdk/context.ts');

const identity = (value: Buffer): Buffer => value;
const definition = {
  echo: {
    path: '/ctxflow.test.Echo/Echo',
    requestStream: false,
    responseStream: false,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
  },
};
const deadlines: (number | undefined)[] = [];
const server = new grpc.Server();
let address = '';

before(async () => {
  server.addService(definition, {
    echo(call: { request: Buffer }, callback: (error: null, value: Buffer) => void) {
      deadlines.push(current().deadline);
      callback(null, call.request);
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (error, bound) =>
      error ? reject(error) : resolve(bound),
    ),
  );
  address = `127.0.0.1:${port}`;
});

after(async () => {
  server.forceShutdown();
  await telemetry.shutdown();
});

function clientSpans(): ReadableSpan[] {
  return exporter.getFinishedSpans().filter((span) => span.kind === SpanKind.CLIENT);
}

/** Runs `call` under a 5 s context inside a server span; resolves with that span's trace id. */
async function underRequest(call: () => Promise<unknown>): Promise<string> {
  const ctx = withTimeout(background(), 5000);
  try {
    return await trace
      .getTracer('test')
      .startActiveSpan('request', { kind: SpanKind.SERVER }, async (span) => {
        await ctx.run(call);
        span.end();
        return span.spanContext().traceId;
      });
  } finally {
    ctx.cancel();
  }
}

function unary(send: (callback: (error: unknown) => void) => void): Promise<void> {
  return new Promise((resolve, reject) => send((error) => (error ? reject(error) : resolve())));
}

test('a generated client: a client span with the budget sent, the server span its child', async () => {
  assert.equal(telemetry.tracing, true);
  const Echo = grpc.makeGenericClientConstructor(definition, 'Echo');
  const client = new Echo(address, grpc.credentials.createInsecure()) as unknown as {
    echo(request: Buffer, callback: (error: unknown) => void): void;
    close(): void;
  };
  try {
    exporter.reset();
    const traceId = await underRequest(() => unary((callback) => client.echo(Buffer.from('a'), callback)));
    const [span] = clientSpans().filter((s) => s.spanContext().traceId === traceId);
    assert.ok(
      span,
      `no client span among ${exporter
        .getFinishedSpans()
        .map((s) => s.name)
        .join(', ')}`,
    );
    const sent = span.attributes[ATTR_BUDGET_SENT];
    assert.equal(typeof sent, 'number');
    assert.ok((sent as number) > 4000 && (sent as number) <= 5000, `budget sent ${sent}`);
    const serverSpan = exporter
      .getFinishedSpans()
      .find((s) => s.kind === SpanKind.SERVER && s.spanContext().traceId === traceId && s.name !== 'request');
    assert.equal(serverSpan?.parentSpanContext?.spanId, span.spanContext().spanId);
    const seen = deadlines.at(-1);
    assert.ok(seen !== undefined && seen - Date.now() <= 5000);
  } finally {
    client.close();
  }
});

test('a plain grpc.Client: its call has a client span too', async () => {
  const client = new grpc.Client(address, grpc.credentials.createInsecure());
  try {
    exporter.reset();
    const traceId = await underRequest(() =>
      unary((callback) =>
        client.makeUnaryRequest(definition.echo.path, identity, identity, Buffer.from('b'), callback),
      ),
    );
    const spans = clientSpans().filter((s) => s.spanContext().traceId === traceId);
    assert.equal(
      spans.length,
      1,
      `client spans of the request's trace: ${spans.map((s) => s.name).join(', ')}`,
    );
    assert.ok(deadlines.at(-1) !== undefined, 'the handler ran under the caller’s deadline');
  } finally {
    client.close();
  }
});
