/**
 * init() with tracing on (spans kept in memory) and kafkajs left unchanged: OpenTelemetry's
 * kafkajs instrumentation makes the producer and consumer spans, ctxflow records the budget sent
 * and on arrival on them and runs the handler in the message's context; with a dead-letter topic,
 * an expired message is dead-lettered, not handled, and shows on its process span.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { SpanKind, trace } from '@opentelemetry/api';
import { InMemorySpanExporter, type ReadableSpan, SimpleSpanProcessor } from '@opentelemetry/sdk-trace';
import { init } from '../init/index.ts';
import { ATTR_BUDGET_ARRIVAL, ATTR_BUDGET_SENT, ATTR_CAUSE } from '../sdk/tracing.ts';

const exporter = new InMemorySpanExporter();
const telemetry = init({
  serviceName: 'init-kafka-otel',
  spanProcessors: [new SimpleSpanProcessor({ exporter })],
  kafka: { budgetMs: 8000, deadLetterTopic: (topic) => `${topic}.dlq` },
});
after(() => telemetry.shutdown());

const { background, current, withTimeout } = await import('../sdk/context.ts');
const { kafkaBrokers } = await import('./support/infra.ts');
const { createTopics, kafkaClient, readTopic, uniqueTopic, waitFor } = await import('./support/kafka.ts');

function spansOf(topic: string, kind: SpanKind): ReadableSpan[] {
  return exporter
    .getFinishedSpans()
    .filter((span) => span.kind === kind && span.attributes['messaging.destination.name'] === topic);
}

test('producer and consumer spans of one trace, the budget sent and on arrival; the handler in the message’s context', async (t) => {
  assert.equal(telemetry.tracing, true);
  const brokers = kafkaBrokers(t);
  if (brokers === undefined) return;
  const kafka = kafkaClient(brokers);
  const topic = uniqueTopic('init-kafka-otel');
  await createTopics(kafka, [topic]);
  const producer = kafka.producer();
  await producer.connect();
  t.after(() => producer.disconnect());
  const ctx = withTimeout(background(), 6000);
  const traceId = await trace
    .getTracer('test')
    .startActiveSpan('request', { kind: SpanKind.SERVER }, async (span) => {
      await ctx.run(() => producer.send({ topic, messages: [{ value: 'a' }] }));
      span.end();
      return span.spanContext().traceId;
    });
  ctx.cancel();

  const consumer = kafka.consumer({ groupId: `g-${topic}`, maxWaitTimeInMs: 100 });
  t.after(() => consumer.disconnect());
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  let seen: { deadline: number | undefined; traceId: string | undefined } | undefined;
  await consumer.run({
    eachMessage: async () => {
      seen = { deadline: current().deadline, traceId: trace.getActiveSpan()?.spanContext().traceId };
    },
  });
  await waitFor('the message', () => seen);
  assert.equal(seen?.traceId, traceId);
  assert.ok((seen?.deadline as number) <= (ctx.deadline as number), 'never more');

  const [send] = spansOf(topic, SpanKind.PRODUCER);
  const process = await waitFor('the process span', () => spansOf(topic, SpanKind.CONSUMER)[0]);
  assert.ok(send, 'a producer span');
  assert.equal(send.spanContext().traceId, traceId);
  assert.equal(process.spanContext().traceId, traceId);
  assert.equal(process.parentSpanContext?.spanId, send.spanContext().spanId);
  const sent = send.attributes[ATTR_BUDGET_SENT] as number;
  const arrival = process.attributes[ATTR_BUDGET_ARRIVAL] as number;
  assert.ok(sent > 0 && sent <= 6000, `sent ${sent}`);
  assert.ok(arrival > 0 && arrival < sent, `arrival ${arrival}, sent ${sent}`);
});

test('an expired message is dead-lettered with its cause, not handled, and shows on its process span', async (t) => {
  const brokers = kafkaBrokers(t);
  if (brokers === undefined) return;
  const kafka = kafkaClient(brokers);
  const topic = uniqueTopic('init-kafka-dlq');
  await createTopics(kafka, [topic, `${topic}.dlq`]);
  const producer = kafka.producer();
  await producer.connect();
  t.after(() => producer.disconnect());
  const ctx = withTimeout(background(), 300);
  await ctx.run(() => producer.send({ topic, messages: [{ value: 'late' }, { value: 'later' }] }));
  await new Promise((resolve) => setTimeout(resolve, 600));
  assert.ok(ctx.done);

  const consumer = kafka.consumer({ groupId: `g-${topic}`, maxWaitTimeInMs: 100 });
  t.after(() => consumer.disconnect());
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  let handled = 0;
  await consumer.run({
    eachMessage: async () => {
      handled++;
    },
  });
  const dead = await readTopic(kafka, `${topic}.dlq`, 2);
  assert.deepEqual(
    dead.map((m) => m.value),
    ['late', 'later'],
  );
  for (const message of dead) {
    assert.equal(message.headers['ctx-cancel-reason'], 'deadline_exceeded');
    assert.match(String(message.headers['ctx-dead-letter-from']), new RegExp(`^g-${topic} ${topic}/0@\\d$`));
  }
  const spans = await waitFor('process spans', () => {
    const found = spansOf(topic, SpanKind.CONSUMER);
    return found.length === 2 ? found : undefined;
  });
  for (const span of spans) {
    assert.equal(span.attributes[ATTR_CAUSE], 'deadline_exceeded');
    assert.equal(span.attributes['ctxflow.kafka.outcome'], 'dead-lettered');
  }
  assert.equal(handled, 0);
});

test('eachBatch: the expired message of a batch is dead-lettered, the handler gets the others in their deadline', async (t) => {
  const brokers = kafkaBrokers(t);
  if (brokers === undefined) return;
  const kafka = kafkaClient(brokers);
  const topic = uniqueTopic('init-kafka-dlq-batch');
  await createTopics(kafka, [topic, `${topic}.dlq`]);
  const producer = kafka.producer();
  await producer.connect();
  t.after(() => producer.disconnect());
  // One send is one record batch: one eachBatch call holds both.
  const soon = Date.now() + 6000;
  await producer.send({
    topic,
    messages: [
      { value: 'late', headers: { 'ctx-deadline': String(Date.now() - 1000) } },
      { value: 'live', headers: { 'ctx-deadline': String(soon) } },
    ],
  });

  const consumer = kafka.consumer({ groupId: `g-${topic}`, maxWaitTimeInMs: 100 });
  t.after(() => consumer.disconnect());
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const handed: { values: string[]; deadline: number | undefined }[] = [];
  await consumer.run({
    eachBatch: async ({ batch }) => {
      handed.push({ values: batch.messages.map((m) => String(m.value)), deadline: current().deadline });
    },
  });
  const dead = await readTopic(kafka, `${topic}.dlq`, 1);
  assert.deepEqual(
    dead.map((m) => m.value),
    ['late'],
  );
  await waitFor('the batch', () => handed[0]);
  assert.deepEqual(handed, [{ values: ['live'], deadline: soon }]);
});

test('messages of one send each carry the trace parent of their own producer span', async (t) => {
  const brokers = kafkaBrokers(t);
  if (brokers === undefined) return;
  const kafka = kafkaClient(brokers);
  const topic = uniqueTopic('init-kafka-otel-parents');
  await createTopics(kafka, [topic]);
  const producer = kafka.producer();
  await producer.connect();
  t.after(() => producer.disconnect());
  const ctx = withTimeout(background(), 6000);
  try {
    // The instrumentation writes each message's trace parent into its headers object: ctxflow's
    // headers, shared by the messages of a send otherwise, are copied per message here.
    await ctx.run(() => producer.send({ topic, messages: [{ value: 'a' }, { value: 'b' }, { value: 'c' }] }));
  } finally {
    ctx.cancel();
  }
  const read = await readTopic(kafka, topic, 3);
  const spans = spansOf(topic, SpanKind.PRODUCER).map((span) => span.spanContext().spanId);
  const parents = read.map((message) => String(message.headers.traceparent).split('-')[2]);
  assert.equal(new Set(parents).size, 3, `three trace parents: ${parents.join(', ')}`);
  for (const parent of parents) assert.ok(spans.includes(parent as string), 'a producer span of its own');
});
