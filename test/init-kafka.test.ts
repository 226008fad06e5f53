/**
 * init() with tracing off and kafkajs left unchanged: a plain producer's messages carry the
 * sender's trace and deadline; a plain consumer's handlers run in each message's context (the
 * deadline shrunk, never more, cut to the consumer's budget), cancelled when they return; an
 * expired message, with no dead-letter topic, is handled in a context already ended.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, test } from 'node:test';
import { context as otel, ROOT_CONTEXT, TraceFlags, trace } from '@opentelemetry/api';
import { init } from '../init/index.ts';

const telemetry = init({ tracing: false, kafka: { budgetMs: 8000 } });
after(() => telemetry.shutdown());

const { background, current, withCancel, withTimeout } = await import('../sdk/context.ts');
const { CancelledError } = await import('../sdk/index.ts');
const { kafkaBrokers } = await import('./support/infra.ts');
const { createTopics, kafkaClient, readTopic, uniqueTopic, waitFor } = await import('./support/kafka.ts');
type Context = ReturnType<typeof current>;

/** What a handler saw: its context, and that context's state once the handler had returned. */
interface Seen {
  ctx: Context;
  deadline: number | undefined;
  traceId: string | undefined;
  done: boolean;
  cause: string | undefined;
}

function sendingTrace(): { traceId: string; run<T>(fn: () => T): T } {
  const traceId = randomBytes(16).toString('hex');
  const spanContext = { traceId, spanId: randomBytes(8).toString('hex'), traceFlags: TraceFlags.SAMPLED };
  return { traceId, run: (fn) => otel.with(trace.setSpanContext(ROOT_CONTEXT, spanContext), fn) };
}

/** Consumes `topic` from the beginning with a plain consumer until `count` messages were handled. */
async function consume(
  brokers: string[],
  topic: string,
  mode: 'eachMessage' | 'eachBatch',
  count = 1,
): Promise<Seen[]> {
  const consumer = kafkaClient(brokers).consumer({ groupId: `g-${topic}`, maxWaitTimeInMs: 100 });
  const seen: Seen[] = [];
  const observe = () => {
    const ctx = current();
    return {
      ctx,
      deadline: ctx.deadline,
      traceId: trace.getSpanContext(otel.active())?.traceId,
      done: ctx.done,
      cause: ctx.cause?.code,
    };
  };
  await consumer.connect();
  try {
    await consumer.subscribe({ topic, fromBeginning: true });
    await consumer.run(
      mode === 'eachMessage'
        ? {
            eachMessage: async () => {
              seen.push(observe());
            },
          }
        : {
            eachBatch: async ({ batch }) => {
              for (const _ of batch.messages) seen.push(observe());
            },
          },
    );
    await waitFor(`${count} messages of ${topic}`, () => (seen.length >= count ? true : undefined), 20_000);
    return seen;
  } finally {
    await consumer.disconnect();
  }
}

test('a plain producer under a deadline: the consumer’s handler runs in that deadline, shrunk, with the trace', async (t) => {
  const brokers = kafkaBrokers(t);
  if (brokers === undefined) return;
  const kafka = kafkaClient(brokers);
  const topic = uniqueTopic('init-kafka');
  await createTopics(kafka, [topic]);
  const producer = kafka.producer();
  await producer.connect();
  t.after(() => producer.disconnect());
  const sender = sendingTrace();
  const ctx = withTimeout(background(), 6000);
  await sender.run(() =>
    ctx.run(() =>
      producer.send({ topic, messages: [{ value: 'a', headers: { 'ctx-request-id': 'kept', mine: 'x' } }] }),
    ),
  );
  ctx.cancel();
  const [sent] = await readTopic(kafka, topic, 1);
  assert.ok(sent);
  assert.match(String(sent.headers.traceparent), new RegExp(`^00-${sender.traceId}-`));
  assert.ok(Number(sent.headers['ctx-deadline']) <= (ctx.deadline as number));
  // ctx-timeout is folded into the record timestamp (the producer's clock at send).
  assert.equal(sent.headers['ctx-timeout'], undefined);
  assert.ok(Number(sent.headers['ctx-deadline']) - Number(sent.timestamp) <= 6000);
  assert.equal(sent.headers['ctx-request-id'], 'kept', 'headers the application set are kept');
  assert.equal(sent.headers.mine, 'x');

  const [seen] = await consume(brokers, topic, 'eachMessage');
  assert.ok(seen);
  assert.equal(seen.traceId, sender.traceId);
  assert.ok(seen.deadline !== undefined && seen.deadline <= (ctx.deadline as number), 'never more');
  assert.equal(seen.done, false);
  assert.equal(seen.ctx.done, true, 'cancelled once the handler returned');
  assert.equal(seen.ctx.cause?.code, 'cancelled');
});

test('the consumer’s own budget cuts a longer deadline; eachBatch gets the earliest of its messages', async (t) => {
  const brokers = kafkaBrokers(t);
  if (brokers === undefined) return;
  const kafka = kafkaClient(brokers);
  const topic = uniqueTopic('init-kafka-budget');
  const batchTopic = uniqueTopic('init-kafka-batch');
  await createTopics(kafka, [topic, batchTopic]);
  const producer = kafka.producer();
  await producer.connect();
  t.after(() => producer.disconnect());
  const long = withTimeout(background(), 60_000);
  await long.run(() => producer.send({ topic, messages: [{ value: 'long' }] }));
  long.cancel();
  const before = Date.now();
  const [seen] = await consume(brokers, topic, 'eachMessage');
  const deadline = seen?.deadline as number;
  // The consumer's budget (8 s) ends long before the message's deadline.
  assert.ok(deadline >= before && deadline <= Date.now() + 8000, `deadline in ${deadline - Date.now()} ms`);

  // One send of two messages is one record batch: one eachBatch call, whose context has the
  // earlier of the two deadlines (set by the application here, and kept).
  const soon = Date.now() + 5000;
  await producer.send({
    topic: batchTopic,
    messages: [
      { value: 'later', headers: { 'ctx-deadline': String(soon + 2000) } },
      { value: 'sooner', headers: { 'ctx-deadline': String(soon) } },
    ],
  });
  const batch = await consume(brokers, batchTopic, 'eachBatch', 2);
  assert.deepEqual(
    batch.map((s) => s.deadline),
    [soon, soon],
  );
});

test('sending under a context that has ended rejects with its error and sends nothing', async (t) => {
  const brokers = kafkaBrokers(t);
  if (brokers === undefined) return;
  const kafka = kafkaClient(brokers);
  const topic = uniqueTopic('init-kafka-done');
  await createTopics(kafka, [topic]);
  const producer = kafka.producer();
  await producer.connect();
  t.after(() => producer.disconnect());
  const ctx = withCancel(background());
  ctx.cancel();
  await assert.rejects(
    ctx.run(() => producer.send({ topic, messages: [{ value: 'never' }] })),
    (error) => error instanceof CancelledError,
  );
  await assert.rejects(
    ctx.run(() => producer.sendBatch({ topicMessages: [{ topic, messages: [{ value: 'never' }] }] })),
    (error) => error instanceof CancelledError,
  );
  await producer.send({ topic, messages: [{ value: 'after' }] });
  const read = await readTopic(kafka, topic, 1);
  assert.deepEqual(
    read.map((m) => m.value),
    ['after'],
  );
});

test('an expired message, with no dead-letter topic: its handler runs in a context already ended', async (t) => {
  const brokers = kafkaBrokers(t);
  if (brokers === undefined) return;
  const kafka = kafkaClient(brokers);
  const topic = uniqueTopic('init-kafka-expired');
  await createTopics(kafka, [topic]);
  const producer = kafka.producer();
  await producer.connect();
  t.after(() => producer.disconnect());
  const ctx = withTimeout(background(), 300);
  await ctx.run(() => producer.send({ topic, messages: [{ value: 'late' }] }));
  await new Promise((resolve) => setTimeout(resolve, 600));
  assert.ok(ctx.done);
  const [seen] = await consume(brokers, topic, 'eachMessage');
  assert.ok(seen);
  assert.equal(seen.done, true);
  assert.equal(seen.cause, 'deadline_exceeded');
});

test('shutdown() undoes the hook: producers made afterwards send messages unchanged', async (t) => {
  const brokers = kafkaBrokers(t);
  if (brokers === undefined) return;
  await telemetry.shutdown();
  const kafka = kafkaClient(brokers);
  const topic = uniqueTopic('init-kafka-undone');
  await createTopics(kafka, [topic]);
  const producer = kafka.producer();
  await producer.connect();
  t.after(() => producer.disconnect());
  const ctx = withTimeout(background(), 6000);
  await ctx.run(() => producer.send({ topic, messages: [{ value: 'plain' }] }));
  ctx.cancel();
  const [read] = await readTopic(kafka, topic, 1);
  assert.deepEqual(read?.headers, {});
});
