/**
 * With OpenTelemetry's instrumentation-grpc, which runs each handler in a context it extracts
 * from the metadata alone: `wrapService` puts the call's ctxflow context back (keeping the
 * instrumentation's server span), and without it ctxflow warns once.
 */
import assert from 'node:assert/strict';
import { register } from 'node:module';
import { after, before, describe, test } from 'node:test';
import { type DiagLogger, DiagLogLevel, diag, SpanKind, trace } from '@opentelemetry/api';

register('@opentelemetry/instrumentation/hook.mjs', import.meta.url);
// The SDK must patch @grpc/grpc-js before anything loads it: everything else comes after.
const { NodeSDK } = await import('@opentelemetry/sdk-node');
const { GrpcInstrumentation } = await import('@opentelemetry/instrumentation-grpc');
const { InMemorySpanExporter, SimpleSpanProcessor } = await import('@opentelemetry/sdk-trace');
const exporter = new InMemorySpanExporter();
const sdk = new NodeSDK({
  spanProcessors: [new SimpleSpanProcessor({ exporter })],
  instrumentations: [new GrpcInstrumentation()],
});
sdk.start();

const warnings: string[] = [];
const logger: DiagLogger = {
  error: () => {},
  warn: (message: string) => warnings.push(message),
  info: () => {},
  debug: () => {},
  verbose: () => {},
};
diag.setLogger(logger, DiagLogLevel.WARN);

const grpc = await import('@grpc/grpc-js');
const support = await import('./support/grpc.ts');
const { background, current, run, withCancel, withTimeout } = await import('../sdk/context.ts');
type Context = import('../sdk/context.ts').Context;

after(() => sdk.shutdown());

test('instrumentation-grpc is active', () => {
  assert.equal((grpc.Server.prototype.register as { __wrapped?: boolean }).__wrapped, true);
});

describe('instrumentation-grpc with serverInterceptor', () => {
  let wrapped: import('./support/grpc.ts').TestServer;
  let bare: import('./support/grpc.ts').TestServer;
  const seen: {
    ctx: Context;
    traceId: string | undefined;
    spanTraceId: string | undefined;
    signal: AbortSignal;
  }[] = [];
  let started = support.deferred<void>();

  const impl = {
    unary: async (
      call: import('@grpc/grpc-js').ServerUnaryCall<import('./support/grpc.ts').Message, unknown>,
    ) => {
      const ctx = current();
      const record = {
        ctx,
        traceId: ctx.traceId,
        spanTraceId: trace.getActiveSpan()?.spanContext().traceId,
        signal: ctx.signal,
      };
      seen.push(record);
      if (call.request.hang) {
        started.resolve();
        await new Promise((resolve) => record.signal.addEventListener('abort', resolve));
      }
      return { remaining: ctx.remaining() };
    },
  };

  before(async () => {
    wrapped = await support.startProbeServer(impl);
    bare = await support.startProbeServer(
      {
        unary: (call, callback) => {
          impl.unary(call).then((value) => callback?.(null, value));
        },
      },
      { wrap: false },
    );
  });

  after(async () => {
    await Promise.all([wrapped.close(), bare.close()]);
  });

  test('with wrapService the handler has the call context, in the trace of the client span', async () => {
    const client = support.probeClient(wrapped.address);
    try {
      const ctx = withTimeout(background(), 1000);
      const tracer = trace.getTracer('test');
      const clientTraceId = await tracer.startActiveSpan('caller', async (span) => {
        try {
          await run(ctx, () => support.unary(client));
          return span.spanContext().traceId;
        } finally {
          span.end();
          ctx.cancel();
        }
      });
      const record = seen.at(-1);
      assert.ok(record);
      // The call's deadline came through (less the reserve, plus whatever transit took).
      assert.ok(record.ctx.deadline !== undefined);
      assert.ok(Math.abs(record.ctx.deadline - (ctx.deadline as number)) < 100, 'the caller deadline');
      assert.equal(record.spanTraceId, clientTraceId, 'the instrumentation server span is kept');
      assert.equal(record.traceId, clientTraceId);
      // The server span ends as the answer leaves; the client may have it first.
      await new Promise((resolve) => setTimeout(resolve, 20));
      const spans = exporter.getFinishedSpans().filter((s) => s.spanContext().traceId === clientTraceId);
      const clientSpan = spans.find((s) => s.kind === SpanKind.CLIENT);
      const serverSpan = spans.find((s) => s.kind === SpanKind.SERVER);
      assert.ok(clientSpan && serverSpan, 'client and server spans in the same trace');
      assert.equal(serverSpan.parentSpanContext?.spanId, clientSpan.spanContext().spanId);
    } finally {
      client.close();
    }
  });

  test('with wrapService a client cancel reaches the handler as upstream_cancelled', async () => {
    const client = support.probeClient(wrapped.address);
    try {
      started = support.deferred<void>();
      const ctx = withCancel(background());
      const pending = run(ctx, () => support.unary(client, { hang: true })).catch((e: unknown) => e);
      await started.promise;
      const record = seen.at(-1);
      ctx.cancel();
      support.assertEndedBy(await pending, ctx);
      await new Promise((resolve) => setTimeout(resolve, 20));
      assert.equal(record?.ctx.cause?.code, 'upstream_cancelled');
      assert.equal(record?.signal.aborted, true);
    } finally {
      client.close();
    }
  });

  test('without wrapService the handler loses the call context, and ctxflow warns once', async () => {
    const client = support.probeClient(bare.address);
    try {
      const ctx = withTimeout(background(), 1000);
      await run(ctx, () => support.unary(client));
      await run(ctx, () => support.unary(client));
      ctx.cancel();
      assert.equal(
        seen.at(-1)?.ctx.deadline,
        undefined,
        'the instrumentation context has no ctxflow context',
      );
      assert.equal(warnings.filter((w) => w.includes('wrapService')).length, 1);
    } finally {
      client.close();
    }
  });
});
