// Three consumer processes in one group over a six-partition topic: a cancel reaches the running
// handler whichever instance holds it, a cancel published before consumption still wins, and no
// message is lost when an instance is killed (on the three-broker cluster).
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe, it, type TestContext } from 'node:test';
import type { Kafka, Producer } from 'kafkajs';
import { cancelBus, producer } from '../adapters/kafka/index.ts';
import { background, withCancel, withTimeout } from '../sdk/context.ts';
import { kafkaBrokers, kafkaClusterAlone } from './support/infra.ts';
import { createTopics, kafkaClient, readTopic, uniqueTopic, waitFor } from './support/kafka.ts';
import type { WorkerConfig } from './support/kafka-worker.ts';
import { startWorker, stopWorker, type Worker } from './support/kafka-workers.ts';

const PARTITIONS = 6;

interface Group {
  kafka: Kafka;
  raw: Producer;
  topic: string;
  busTopic: string;
  workers: Worker[];
}

/** Three workers in one group, each holding two of the six partitions. */
async function startGroup(
  t: TestContext,
  mode: WorkerConfig['mode'],
  brokers: string[] | undefined,
): Promise<Group | undefined> {
  if (brokers === undefined) return undefined;
  const kafka = kafkaClient(brokers);
  const topic = uniqueTopic('group');
  const busTopic = uniqueTopic('bus');
  await createTopics(kafka, [topic], PARTITIONS);
  await createTopics(kafka, [busTopic, `${topic}.dead-letter`]);
  const raw = kafka.producer();
  await raw.connect();
  const config: WorkerConfig = {
    brokers,
    topic,
    groupId: `group-${randomUUID()}`,
    busTopic,
    mode,
    delayMs: 30,
  };
  const workers = [0, 1, 2].map((i) => startWorker(i, config));
  t.after(async () => {
    await Promise.all(workers.map(stopWorker));
    await raw.disconnect();
  });
  await waitFor(
    'three workers with two partitions each',
    () =>
      workers.every((w) => w.partitions.length === 2 && w.events.some((e) => e.type === 'ready'))
        ? true
        : undefined,
    30_000,
  );
  return { kafka, raw, topic, busTopic, workers };
}

function holder(group: Group, partition: number): Worker {
  const worker = group.workers.find((w) => w.partitions.includes(partition));
  assert.ok(worker, `partition ${partition} is assigned`);
  return worker;
}

describe('ctxflow/kafka, three instances in one group', () => {
  it('a cancel reaches the running handler whichever instance holds it; one queued behind it still wins', async (t) => {
    const group = await startGroup(t, 'block', kafkaBrokers(t));
    if (!group) return;
    const bus = cancelBus(group.kafka, { topic: group.busTopic });
    t.after(() => bus.stop());
    await bus.connect();
    const send = producer(group.raw, { cancelBus: bus });
    const latencies: number[] = [];
    for (let partition = 0; partition < PARTITIONS; partition++) {
      const request = withCancel(background());
      const value = `running-${partition}`;
      await request.run(() => send.send({ topic: group.topic, messages: [{ value, partition }] }));
      const worker = holder(group, partition);
      await waitFor(`${value} to start`, () =>
        worker.events.find((e) => e.type === 'start' && e.value === value),
      );
      const at = performance.now();
      request.cancel({ code: 'client_disconnected', message: `p${partition}` });
      const end = await waitFor(`${value} to end`, () =>
        worker.events.find((e) => e.type === 'end' && e.value === value),
      );
      latencies.push(performance.now() - at);
      assert.deepEqual(end.type === 'end' && [end.cause, end.message], [
        'client_disconnected',
        `p${partition}`,
      ]);
    }
    t.diagnostic(`cancel to handler abort, ms: ${latencies.map((l) => l.toFixed(0)).join(' ')}`);

    // A blocks partition 0; B waits behind it and is cancelled while queued.
    const a = withCancel(background());
    const b = withCancel(background());
    await a.run(() => send.send({ topic: group.topic, messages: [{ value: 'A', partition: 0 }] }));
    await b.run(() => send.send({ topic: group.topic, messages: [{ value: 'B', partition: 0 }] }));
    const worker = holder(group, 0);
    await waitFor('A to start', () => worker.events.find((e) => e.type === 'start' && e.value === 'A'));
    b.cancel('out_of_stock');
    const bId = await waitFor('the cancel event on every instance', () => {
      const seen = group.workers.map((w) => w.events.filter((e) => e.type === 'cancel-seen').length);
      return seen.every((n) => n === PARTITIONS + 1) ? true : undefined;
    });
    assert.ok(bId);
    a.cancel('cancelled');
    const dead = await readTopic(group.kafka, `${group.topic}.dead-letter`, PARTITIONS + 2);
    const deadB = dead.find((d) => d.value === 'B');
    assert.equal(deadB?.headers['ctx-cancel-reason'], 'out_of_stock');
    assert.ok(!group.workers.some((w) => w.events.some((e) => e.type === 'start' && e.value === 'B')));
  });

  it('loses no message when an instance is killed mid-stream (three-broker cluster)', async (t) => {
    const group = await startGroup(t, 'slow', await kafkaClusterAlone(t));
    if (!group) return;
    const send = producer(group.raw);
    const values = Array.from({ length: 60 }, (_, i) => `m${i}`);
    {
      const ctx = withTimeout(background(), 55_000);
      try {
        await ctx.run(() =>
          send.send({
            topic: group.topic,
            messages: values.map((value, i) => ({ value, partition: i % PARTITIONS })),
          }),
        );
      } finally {
        ctx.cancel();
      }
    }
    const handled = () =>
      new Set(group.workers.flatMap((w) => w.events.flatMap((e) => (e.type === 'handled' ? [e.value] : []))));
    await waitFor('a third of the messages', () => (handled().size >= 20 ? true : undefined));
    const victim = group.workers[1] as Worker;
    victim.child.kill('SIGKILL');
    await waitFor(
      'every message handled',
      () => (values.every((v) => handled().has(v)) ? true : undefined),
      30_000,
    );
    const counts = group.workers.map((w) => w.events.filter((e) => e.type === 'handled').length);
    t.diagnostic(
      `handled per instance ${counts.join('/')}, ${counts.reduce((a, b) => a + b) - values.length} twice`,
    );
  });
});
