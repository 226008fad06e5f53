// ctxflow/kafka against the real broker: deadlines through the queue, the expiry policy, retries
// and dead letters, cancellation over the bus, eachBatch contexts and hostile headers.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, it, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import fc from 'fast-check';
import { Kafka, logLevel, type Producer } from 'kafkajs';
import { cancelBus, consumer, type MessagePayload, producer } from '../adapters/kafka/index.ts';
import { background, withCancel, withTimeout } from '../sdk/context.ts';
import { CancelledError } from '../sdk/errors.ts';
import { kafkaBrokers } from './support/infra.ts';
import { createTopics, kafkaClient, readTopic, uniqueTopic, waitFor } from './support/kafka.ts';

let kafka: Kafka | undefined;
let raw: Producer;

function setup(t: TestContext): Kafka | undefined {
  const brokers = kafkaBrokers(t);
  if (brokers === undefined) return undefined;
  assert.ok(kafka, 'client set up');
  return kafka;
}

before(async () => {
  const brokers = process.env.KAFKA_BROKERS;
  if (!brokers) return;
  kafka = kafkaClient(brokers.split(','));
  raw = kafka.producer();
  await raw.connect();
});

after(async () => {
  await raw?.disconnect();
});

/** A ctxflow consumer on `topic` whose handler records each payload; stopped at the end of the test. */
async function startConsumer(
  t: TestContext,
  client: Kafka,
  topic: string,
  handler: (payload: MessagePayload) => Promise<void>,
  options: Parameters<typeof consumer>[1] = {},
  mode: 'eachMessage' | 'eachBatch' = 'eachMessage',
) {
  const inner = client.consumer({ groupId: `test-${randomUUID()}`, maxWaitTimeInMs: 100 });
  const c = consumer(inner, { deadLetterProducer: raw, retryBackoffMs: 10, ...options });
  t.after(() => c.disconnect());
  await c.connect();
  await c.subscribe({ topic, fromBeginning: true });
  await c.run({ [mode]: handler });
  return c;
}

describe('ctxflow/kafka', () => {
  it('carries the deadline through the queue, counting the time spent in it', async (t) => {
    const client = setup(t);
    if (!client) return;
    const topic = uniqueTopic('deadline');
    await createTopics(client, [topic]);
    const send = producer(raw);
    const ctx = withTimeout(background(), 5_000);
    try {
      const sentAt = Date.now();
      await ctx.run(() =>
        send.send({ topic, messages: [{ value: 'order-1', headers: { 'x-order': '1' } }] }),
      );
      await sleep(400); // time in the queue
      const seen: { deadline: number | undefined; remaining: number; traceId: string | undefined }[] = [];
      await startConsumer(t, client, topic, async ({ ctx: messageCtx }) => {
        seen.push({
          deadline: messageCtx.deadline,
          remaining: messageCtx.remaining(),
          traceId: messageCtx.traceId,
        });
      });
      const [first] = await waitFor('the message', () => (seen.length > 0 ? seen : undefined));
      assert.ok(first);
      // The producer's deadline minus the 5 ms reserve, on the same clock: queue time counted.
      assert.equal(first.deadline, Math.floor((ctx.deadline as number) - 5));
      assert.ok(first.remaining <= 5_000 - 400, `remaining ${first.remaining} counts the queue time`);
      assert.ok(first.remaining > 0 && Date.now() - sentAt < 5_000);
    } finally {
      ctx.cancel();
    }
  });

  it('writes one deadline header: ctx-deadline with the record timestamp; ctx-timeout and a request id only when needed', async (t) => {
    const client = setup(t);
    if (!client) return;
    const topic = uniqueTopic('wire');
    const busTopic = uniqueTopic('wire-bus');
    await createTopics(client, [topic]);
    const bus = cancelBus(client, { topic: busTopic });
    t.after(() => bus.stop());
    const plain = producer(raw);
    const watched = producer(raw, { cancelBus: bus });
    const ctx = withTimeout(background(), 5_000);
    const before = Date.now();
    try {
      await ctx.run(async () => {
        await plain.send({ topic, messages: [{ value: 'plain' }] });
        await watched.send({ topic, messages: [{ value: 'watched' }] });
        await plain.send({ topic, messages: [{ value: 'own-time', timestamp: '1700000000000' }] });
      });
      await background().run(() => watched.send({ topic, messages: [{ value: 'background' }] }));
    } finally {
      ctx.cancel();
    }
    const read = new Map((await readTopic(client, topic, 4)).map((m) => [m.value, m]));
    const deadline = String(Math.floor((ctx.deadline as number) - 5));
    const plainMessage = read.get('plain');
    assert.ok(plainMessage);
    assert.deepEqual(Object.keys(plainMessage.headers).sort(), ['ctx-deadline']);
    assert.equal(plainMessage.headers['ctx-deadline'], deadline);
    // The record timestamp is the producer's clock when it wrote the deadline: their difference
    // is the budget left at send, what ctx-timeout carried.
    const sentAt = Number(plainMessage.timestamp);
    assert.ok(sentAt >= before && sentAt <= Date.now());
    assert.ok(Number(deadline) - sentAt <= 5_000 - 5);
    const watchedMessage = read.get('watched');
    assert.deepEqual(Object.keys(watchedMessage?.headers ?? {}).sort(), ['ctx-deadline', 'ctx-request-id']);
    // A timestamp of the application's says nothing of when the deadline was written.
    const ownTime = read.get('own-time');
    assert.equal(ownTime?.timestamp, '1700000000000');
    assert.equal(ownTime?.headers['ctx-deadline'], deadline);
    assert.ok(Number(ownTime?.headers['ctx-timeout']) <= 5_000 - 5);
    // background() never ends: no deadline, and no request id a cancel could name.
    assert.deepEqual(read.get('background')?.headers, {});
  });

  it('reads the deadline headers of other producers: both, or ctx-deadline with the record timestamp', async (t) => {
    const client = setup(t);
    if (!client) return;
    const topic = uniqueTopic('interop');
    await createTopics(client, [topic]);
    const now = Date.now();
    await raw.send({
      topic,
      messages: [
        // What ctxflow producers wrote before, and what other clients (kcat, Java) may write.
        { value: 'both', headers: { 'ctx-deadline': String(now + 4_000), 'ctx-timeout': '2000' } },
        {
          value: 'deadline',
          timestamp: String(now - 1_000),
          headers: { 'ctx-deadline': String(now + 3_000) },
        },
        { value: 'timeout', headers: { 'ctx-timeout': '2500' } },
      ],
    });
    const seen = new Map<string, number>();
    const arrived = new Map<string, number>();
    await startConsumer(t, client, topic, async ({ message, ctx }) => {
      seen.set(String(message.value), ctx.deadline as number);
      arrived.set(String(message.value), Date.now());
    });
    await waitFor('three messages', () => (seen.size === 3 ? true : undefined));
    // Both: the earlier of the absolute deadline and now + ctx-timeout.
    assert.ok((seen.get('both') as number) <= (arrived.get('both') as number) + 2_000);
    // ctx-deadline alone: bounded by what the record timestamp says was left at send (4 s), and by
    // the deadline itself.
    assert.equal(seen.get('deadline'), now + 3_000);
    // ctx-timeout alone: relative, from arrival.
    assert.ok((seen.get('timeout') as number) <= (arrived.get('timeout') as number) + 2_500);
  });

  it('dead-letters a message that expired in the queue, with its headers, reason, place and time', async (t) => {
    const client = setup(t);
    if (!client) return;
    const topic = uniqueTopic('expired');
    await createTopics(client, [topic, `${topic}.dead-letter`]);
    const send = producer(raw);
    {
      const ctx = withTimeout(background(), 100);
      try {
        await ctx.run(() =>
          send.send({ topic, messages: [{ key: 'k', value: 'late', headers: { 'x-order': '7' } }] }),
        );
      } finally {
        ctx.cancel();
      }
    }
    const [sent] = await readTopic(client, topic, 1);
    assert.ok(sent);
    await sleep(200);
    const handled: string[] = [];
    const before = Date.now();
    await startConsumer(t, client, topic, async ({ message }) => {
      handled.push(String(message.value));
    });
    const [dead] = await readTopic(client, `${topic}.dead-letter`, 1);
    assert.ok(dead);
    assert.equal(dead.value, 'late');
    assert.equal(dead.key, 'k');
    assert.equal(dead.headers['x-order'], '7');
    assert.equal(dead.headers['ctx-cancel-reason'], 'deadline_exceeded');
    assert.match(
      String(dead.headers['ctx-dead-letter-from']),
      new RegExp(`^test-\\S+ ${topic.replaceAll('.', '\\.')}/0@0$`),
    );
    const at = Number(dead.headers['ctx-dead-letter-at']);
    assert.ok(at >= before && at <= Date.now(), 'expired when taken from the queue');
    assert.ok(dead.headers['ctx-deadline'], 'original ctx-deadline kept');
    assert.equal(dead.timestamp, sent.timestamp, 'original timestamp kept: the two still imply ctx-timeout');
    assert.deepEqual(handled, []);
  });

  it('skips expired messages by policy, or processes them anyway under the budget', async (t) => {
    const client = setup(t);
    if (!client) return;
    const topic = uniqueTopic('policy');
    await createTopics(client, [topic]);
    const send = producer(raw);
    {
      const ctx = withTimeout(background(), 50);
      try {
        await ctx.run(() => send.send({ topic, messages: [{ value: 'late' }] }));
      } finally {
        ctx.cancel();
      }
    }
    await sleep(100);
    await ctx0(send, topic, 'fresh');
    const skipped: string[] = [];
    await startConsumer(t, client, topic, async ({ message }) => void skipped.push(String(message.value)), {
      onExpired: 'skip',
    });
    const processed: { value: string; expired: boolean; remaining: number }[] = [];
    await startConsumer(
      t,
      client,
      topic,
      async ({ message, expired, ctx }) =>
        void processed.push({ value: String(message.value), expired, remaining: ctx.remaining() }),
      { onExpired: 'process', budgetMs: 2_000 },
    );
    await waitFor('both consumers', () => (skipped.length >= 1 && processed.length >= 2 ? true : undefined));
    await sleep(200);
    assert.deepEqual(skipped, ['fresh']);
    assert.deepEqual(
      processed.map((p) => [p.value, p.expired]),
      [
        ['late', true],
        ['fresh', false],
      ],
    );
    assert.ok((processed[0]?.remaining ?? 0) > 1_000 && (processed[0]?.remaining ?? 0) <= 2_000);
  });

  it('retries a failing handler, then dead-letters the message', async (t) => {
    const client = setup(t);
    if (!client) return;
    const topic = uniqueTopic('failing');
    await createTopics(client, [topic, `${topic}.dead-letter`]);
    await ctx0(producer(raw), topic, 'poison');
    let attempts = 0;
    await startConsumer(
      t,
      client,
      topic,
      async () => {
        attempts++;
        throw new Error('boom');
      },
      { retries: 2 },
    );
    const [dead] = await readTopic(client, `${topic}.dead-letter`, 1);
    assert.equal(attempts, 3);
    assert.equal(dead?.headers['ctx-cancel-reason'], 'error');
    assert.equal(dead?.headers['ctx-dead-letter-attempts'], '3');
  });

  it('cancelling the producing context aborts the running handler with its cause and skips the queued messages', async (t) => {
    const client = setup(t);
    if (!client) return;
    const topic = uniqueTopic('cancel');
    const bus = cancelBus(client, { topic: uniqueTopic('bus') });
    t.after(() => bus.stop());
    await createTopics(client, [topic, `${topic}.dead-letter`]);
    await bus.connect();
    const send = producer(raw, { cancelBus: bus });
    const request = withCancel(background());
    await request.run(() =>
      send.send({ topic, messages: [{ value: 'm1' }, { value: 'm2' }, { value: 'm3' }] }),
    );
    const started: string[] = [];
    let ended: unknown;
    await startConsumer(
      t,
      client,
      topic,
      async ({ message, ctx }) => {
        started.push(String(message.value));
        await new Promise<void>((resolve) => ctx.signal.addEventListener('abort', () => resolve()));
        ended = ctx.signal.reason;
        throw ended;
      },
      { cancelBus: bus },
    );
    await waitFor('the first handler', () => (started.length > 0 ? true : undefined));
    const cancelledAt = performance.now();
    request.cancel({ code: 'out_of_stock', message: 'sku 42' });
    await waitFor('the abort', () => ended);
    const latency = performance.now() - cancelledAt;
    assert.ok(ended instanceof CancelledError);
    assert.deepEqual(ended.cause, { code: 'out_of_stock', message: 'sku 42' });
    const dead = await readTopic(client, `${topic}.dead-letter`, 3);
    assert.deepEqual(dead.map((d) => d.value).sort(), ['m1', 'm2', 'm3']);
    for (const d of dead) assert.equal(d.headers['ctx-cancel-reason'], 'out_of_stock sku 42');
    assert.deepEqual(started, ['m1'], 'queued messages of the request are never handled');
    t.diagnostic(`cancel to handler abort: ${latency.toFixed(1)} ms`);
  });

  it('a cancel published before the consumer starts still wins; a normal end (plain cancel()) publishes nothing', async (t) => {
    const client = setup(t);
    if (!client) return;
    const topic = uniqueTopic('early-cancel');
    const busTopic = uniqueTopic('bus');
    const publisher = cancelBus(client, { topic: busTopic });
    t.after(() => publisher.stop());
    await createTopics(client, [topic, busTopic]);
    const send = producer(raw, { cancelBus: publisher });
    const cancelled = withCancel(background());
    await cancelled.run(() => send.send({ topic, messages: [{ value: 'cancelled' }] }));
    const released = withCancel(background());
    await released.run(() => send.send({ topic, messages: [{ value: 'released' }] }));
    cancelled.cancel('client_disconnected');
    released.cancel();
    const events = await readTopic(client, busTopic, 1);
    await sleep(300);
    assert.equal(events.length, 1);
    // A new instance, as after a restart: its own reader learns the cancellation from the bus.
    const bus = cancelBus(client, { topic: busTopic });
    t.after(() => bus.stop());
    const handled: string[] = [];
    await startConsumer(t, client, topic, async ({ message }) => void handled.push(String(message.value)), {
      cancelBus: bus,
      onExpired: 'skip',
    });
    await waitFor('the released message', () => (handled.length > 0 ? true : undefined));
    await sleep(300);
    assert.deepEqual(handled, ['released']);
    assert.equal(bus.cancelled(String(events[0]?.key))?.code, 'client_disconnected');
  });

  it('the bus creates its topic once: a second instance starts without an error in the kafkajs log', async (t) => {
    if (!setup(t)) return;
    const logged: string[] = [];
    const client = new Kafka({
      clientId: 'ctxflow-test-quiet',
      brokers: (process.env.KAFKA_BROKERS as string).split(','),
      logLevel: logLevel.WARN,
      logCreator: () => (entry) => void logged.push(`${entry.namespace} ${entry.log.message}`),
    });
    const busTopic = uniqueTopic('bus-quiet');
    for (let i = 0; i < 2; i++) {
      const bus = cancelBus(client, { topic: busTopic });
      await bus.start();
      await bus.stop();
    }
    const admin = client.admin();
    await admin.connect();
    t.after(() => admin.disconnect());
    assert.ok((await admin.listTopics()).includes(busTopic), 'the first instance created the topic');
    assert.deepEqual(
      logged.filter((line) => /CreateTopics|Topic creation/.test(line)),
      [],
    );
  });

  it('a rebalance mid-handle cancels the handler (cause rebalance) and the message is handled again', async (t) => {
    const client = setup(t);
    if (!client) return;
    const topic = uniqueTopic('rebalance');
    await createTopics(client, [topic], 2);
    await ctx0(producer(raw), topic, 'm');
    const groupId = `test-${randomUUID()}`;
    const runs: { who: string; cause?: string }[] = [];
    const start = async (who: string) => {
      const c = consumer(client.consumer({ groupId, maxWaitTimeInMs: 100, heartbeatInterval: 100 }), {
        deadLetterProducer: raw,
        heartbeatIntervalMs: 100,
      });
      t.after(() => c.disconnect());
      await c.connect();
      await c.subscribe({ topic, fromBeginning: true });
      await c.run({
        eachMessage: async ({ ctx }) => {
          const run: { who: string; cause?: string } = { who };
          runs.push(run);
          if (runs.length > 1) return;
          await new Promise<void>((resolve) => ctx.signal.addEventListener('abort', () => resolve()));
          run.cause = ctx.cause?.code;
          throw ctx.signal.reason;
        },
      });
    };
    await start('first');
    await waitFor('the first run', () => (runs.length > 0 ? true : undefined));
    await start('second');
    await waitFor('the message handled again', () => (runs.length > 1 ? true : undefined), 20_000);
    assert.equal(runs[0]?.cause, 'rebalance');
  });

  it('sending under a done context rejects with its error and sends nothing', async (t) => {
    const client = setup(t);
    if (!client) return;
    const topic = uniqueTopic('done');
    await createTopics(client, [topic]);
    const send = producer(raw);
    const ctx = withCancel(background());
    ctx.cancel('shutdown');
    await assert.rejects(
      ctx.run(() => send.send({ topic, messages: [{ value: 'never' }] })),
      (error: unknown) => error instanceof CancelledError && error.cause.code === 'shutdown',
    );
    const admin = client.admin();
    await admin.connect();
    const offsets = await admin.fetchTopicOffsets(topic);
    await admin.disconnect();
    assert.deepEqual(
      offsets.map((o) => o.high),
      ['0'],
    );
  });

  it('eachBatch runs each message of a batch in its own context', async (t) => {
    const client = setup(t);
    if (!client) return;
    const topic = uniqueTopic('batch');
    await createTopics(client, [topic]);
    const send = producer(raw);
    const sent: { value: string; deadline: number; traceId: string | undefined }[] = [];
    for (let i = 0; i < 5; i++) {
      const ctx = withTimeout(background(), 5_000 + i * 1_000);
      try {
        await ctx.run(() => send.send({ topic, messages: [{ value: `b${i}` }] }));
        sent.push({ value: `b${i}`, deadline: Math.floor((ctx.deadline as number) - 5), traceId: undefined });
      } finally {
        ctx.cancel();
      }
    }
    const seen: { value: string; deadline: number | undefined; batchSize: number; current: boolean }[] = [];
    const { current } = await import('../sdk/context.ts');
    await startConsumer(
      t,
      client,
      topic,
      async ({ message, ctx, batch }) => {
        seen.push({
          value: String(message.value),
          deadline: ctx.deadline,
          batchSize: batch?.messages.length ?? 0,
          current: current() === ctx,
        });
      },
      {},
      'eachBatch',
    );
    await waitFor('five messages', () => (seen.length >= 5 ? true : undefined));
    assert.deepEqual(
      seen.map((s) => [s.value, s.deadline, s.current]),
      sent.map((s) => [s.value, s.deadline, true]),
    );
    assert.ok(
      seen.some((s) => s.batchSize > 1),
      'several messages came in one batch',
    );
  });

  it('hostile headers never crash the consumer: the message runs under the default budget', async (t) => {
    const client = setup(t);
    if (!client) return;
    const topic = uniqueTopic('fuzz');
    await createTopics(client, [topic]);
    const keys = ['ctx-timeout', 'ctx-deadline', 'ctx-request-id', 'traceparent', 'ctx-cancel-reason'];
    const value = fc.oneof(
      fc.string(),
      fc.uint8Array({ maxLength: 40 }).map((bytes) => Buffer.from(bytes)),
      fc.array(fc.oneof(fc.string(), fc.stringMatching(/^[0-9]{1,14}$/)), { maxLength: 3 }),
      fc.stringMatching(/^[0-9]{1,14}$/),
    );
    const headerSets = fc.sample(fc.dictionary(fc.constantFrom(...keys), value), { numRuns: 60, seed: 42 });
    await raw.send({
      topic,
      messages: headerSets.map((headers, i) => ({ value: String(i), headers })),
    });
    const seen = new Map<string, number>();
    const budgetMs = 3_000;
    await startConsumer(
      t,
      client,
      topic,
      async ({ message, ctx }) => {
        assert.ok(ctx.remaining() <= budgetMs);
        seen.set(String(message.value), ctx.remaining());
      },
      { budgetMs, onExpired: 'process' },
    );
    await waitFor('every message', () => (seen.size >= headerSets.length ? true : undefined));
    for (const remaining of seen.values()) assert.ok(Number.isFinite(remaining) && remaining >= 0);
  });
});

async function ctx0(send: Producer, topic: string, value: string): Promise<void> {
  const ctx = withTimeout(background(), 10_000);
  try {
    await ctx.run(() => send.send({ topic, messages: [{ value }] }));
  } finally {
    ctx.cancel();
  }
}
