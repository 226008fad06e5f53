import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { context, propagation, type TextMapPropagator, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { CompositePropagator, W3CTraceContextPropagator } from '@opentelemetry/core';
import { UndiciInstrumentation } from '@opentelemetry/instrumentation-undici';
import { InMemorySpanExporter, SimpleSpanProcessor, TracerProvider } from '@opentelemetry/sdk-trace';
import { fetch } from '../adapters/http/fetch.ts';
import { background, withTimeout } from '../sdk/context.ts';
import { DeadlinePropagator } from '../sdk/index.ts';
import { type Peer, peer, valuesOf } from './support/http.ts';

// With instrumentation-undici, the instrumentation adds the global propagator's headers to every
// fetch itself. The ctxflow fetch must leave those to it, or each would arrive twice (and a
// repeated ctx-timeout or traceparent is refused by the receiver).

const exporter = new InMemorySpanExporter();
const provider = new TracerProvider({ spanProcessors: [new SimpleSpanProcessor({ exporter })] });
let instrumentation: UndiciInstrumentation;
let server: Peer;

before(async () => {
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  trace.setGlobalTracerProvider(provider);
  instrumentation = new UndiciInstrumentation();
  server = await peer();
});

after(async () => {
  instrumentation.disable();
  await server.close();
  await provider.shutdown();
});

function usePropagator(propagator: TextMapPropagator): void {
  propagation.disable();
  propagation.setGlobalPropagator(propagator);
}

async function sendUnderSpan(): Promise<{
  raw: string[];
  traceId: string;
  clientSpanId: string | undefined;
}> {
  exporter.reset();
  const tracer = trace.getTracer('test');
  const ctx = withTimeout(background(), 2_000);
  try {
    return await tracer.startActiveSpan('handler', async (span) => {
      try {
        const raw = (await (await ctx.run(() => fetch(`${server.url}/echo`))).json()) as string[];
        const client = exporter.getFinishedSpans().find((s) => s.name === 'GET');
        return { raw, traceId: span.spanContext().traceId, clientSpanId: client?.spanContext().spanId };
      } finally {
        span.end();
      }
    });
  } finally {
    ctx.cancel();
  }
}

test('W3C + DeadlinePropagator composed: each header once, traceparent from the undici client span', async () => {
  usePropagator(
    new CompositePropagator({ propagators: [new W3CTraceContextPropagator(), new DeadlinePropagator()] }),
  );
  const { raw, traceId, clientSpanId } = await sendUnderSpan();
  const traceparents = valuesOf(raw, 'traceparent');
  assert.equal(traceparents.length, 1);
  assert.equal(valuesOf(raw, 'ctx-timeout').length, 1);
  assert.equal(valuesOf(raw, 'ctx-deadline').length, 1);
  const [, sentTrace, sentParent] = (traceparents[0] as string).split('-');
  assert.equal(sentTrace, traceId);
  assert.ok(clientSpanId !== undefined);
  assert.equal(sentParent, clientSpanId);
  assert.ok(Number(valuesOf(raw, 'ctx-timeout')[0]) <= 1_995);
});

test('W3C alone: the instrumentation sends traceparent, the ctxflow fetch the budget, each once', async () => {
  usePropagator(new W3CTraceContextPropagator());
  const { raw, traceId } = await sendUnderSpan();
  assert.equal(valuesOf(raw, 'traceparent').length, 1);
  assert.equal(valuesOf(raw, 'traceparent')[0]?.split('-')[1], traceId);
  assert.equal(valuesOf(raw, 'ctx-timeout').length, 1);
  assert.equal(valuesOf(raw, 'ctx-deadline').length, 0);
});

test("the caller's own copies of delegated headers are dropped, not sent beside the instrumentation's", async () => {
  usePropagator(
    new CompositePropagator({ propagators: [new W3CTraceContextPropagator(), new DeadlinePropagator()] }),
  );
  const ctx = withTimeout(background(), 1_000);
  try {
    const stale = '00-11111111111111111111111111111111-2222222222222222-01';
    const raw = (await (
      await fetch(`${server.url}/echo`, { ctx, headers: { traceparent: stale, 'ctx-timeout': '99999' } })
    ).json()) as string[];
    assert.equal(valuesOf(raw, 'traceparent').length, 1);
    assert.notEqual(valuesOf(raw, 'traceparent')[0], stale);
    assert.deepEqual(valuesOf(raw, 'ctx-timeout').length, 1);
    assert.ok(Number(valuesOf(raw, 'ctx-timeout')[0]) <= 995);
  } finally {
    ctx.cancel();
  }
});
