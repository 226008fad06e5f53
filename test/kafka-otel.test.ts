// With a tracing SDK: each message consumed in eachBatch mode gets its own process span, a child of
// the span it was produced under and linked to it, and runs with that trace as its context.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, it } from 'node:test';
import { context, propagation, SpanKind, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { InMemorySpanExporter, SimpleSpanProcessor, TracerProvider } from '@opentelemetry/sdk-trace';
import { consumer, producer } from '../adapters/kafka/index.ts';
import { background, withTimeout } from '../sdk/index.ts';
import { kafkaBrokers } from './support/infra.ts';
import { createTopics, kafkaClient, uniqueTopic, waitFor } from './support/kafka.ts';

const exporter = new InMemorySpanExporter();
const provider = new TracerProvider({ spanProcessors: [new SimpleSpanProcessor({ exporter })] });

before(() => {
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  trace.setGlobalTracerProvider(provider);
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
});

after(() => provider.shutdown());

it('eachBatch: a process span per message, child of and linked to its producer span', async (t) => {
  const brokers = kafkaBrokers(t);
  if (brokers === undefined) return;
  const kafka = kafkaClient(brokers);
  const topic = uniqueTopic('otel');
  await createTopics(kafka, [topic]);
  const raw = kafka.producer();
  t.after(() => raw.disconnect());
  await raw.connect();
  const send = producer(raw);
  const tracer = trace.getTracer('test');
  const producers: { value: string; traceId: string; spanId: string }[] = [];
  for (const value of ['a', 'b', 'c']) {
    await tracer.startActiveSpan(`send ${value}`, { kind: SpanKind.PRODUCER }, async (span) => {
      const ctx = withTimeout(background(), 10_000);
      try {
        await ctx.run(() => send.send({ topic, messages: [{ value }] }));
        producers.push({ value, traceId: span.spanContext().traceId, spanId: span.spanContext().spanId });
        span.end();
      } finally {
        ctx.cancel();
      }
    });
  }
  const seen = new Map<string, { traceId: string | undefined; activeSpanId: string | undefined }>();
  const c = consumer(kafka.consumer({ groupId: `otel-${randomUUID()}`, maxWaitTimeInMs: 100 }), {
    deadLetterProducer: raw,
  });
  t.after(() => c.disconnect());
  await c.connect();
  await c.subscribe({ topic, fromBeginning: true });
  await c.run({
    eachBatch: async ({ message, ctx }) => {
      seen.set(String(message.value), {
        traceId: ctx.traceId,
        activeSpanId: trace.getSpan(context.active())?.spanContext().spanId,
      });
    },
  });
  await waitFor('three messages', () => (seen.size === 3 ? true : undefined));
  await waitFor('three process spans', () =>
    exporter.getFinishedSpans().filter((s) => s.name === `${topic} process`).length === 3 ? true : undefined,
  );
  const spans = exporter.getFinishedSpans().filter((s) => s.name === `${topic} process`);
  for (const sent of producers) {
    const span = spans.find((s) => s.spanContext().traceId === sent.traceId);
    assert.ok(span, `a process span in the trace of ${sent.value}`);
    assert.equal(span.kind, SpanKind.CONSUMER);
    assert.equal(span.parentSpanContext?.spanId, sent.spanId);
    assert.deepEqual(
      span.links.map((l) => l.context.spanId),
      [sent.spanId],
    );
    assert.equal(seen.get(sent.value)?.traceId, sent.traceId);
    assert.equal(
      seen.get(sent.value)?.activeSpanId,
      span.spanContext().spanId,
      'the handler runs in the span',
    );
  }
});
