// A consumer taking part in a graceful shutdown under load, against the real broker: what its
// handlers finished within the grace is committed; what they did not finish (cancelled with cause
// `shutdown`) and what they had not started is handled by the group's next consumer. Nothing is
// lost, nothing dead-lettered. The moment of the shutdown is set by the handlers themselves, not
// by a timer: one handler per partition waits at a known position until the shutdown begins.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe, it, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Producer, ProducerRecord } from 'kafkajs';
import { consumer, type MessagePayload } from '../adapters/kafka/index.ts';
import { shutdown } from '../sdk/resilience/index.ts';
import { kafkaBrokers } from './support/infra.ts';
import { createTopics, kafkaClient, uniqueTopic, waitFor } from './support/kafka.ts';

const PARTITIONS = 4;
const PER_PARTITION = 50;
/** The position in each partition where consumer A's handler is still running when the shutdown begins. */
const AT = 25;
const GRACE = 500;

const name = (partition: number, index: number) => `p${partition}-${index}`;
const sorted = (values: Iterable<string>) => [...values].sort();

describe('ctxflow/kafka with a graceful shutdown', () => {
  for (const mode of ['eachMessage', 'eachBatch'] as const) {
    it(`under load (${mode}): what finished within the grace is committed; cancelled and unstarted messages go to the next consumer; none lost or dead-lettered`, (t) =>
      underLoad(t, mode));
  }
});

async function underLoad(t: TestContext, mode: 'eachMessage' | 'eachBatch'): Promise<void> {
  const brokers = kafkaBrokers(t);
  if (!brokers) return;
  const kafka = kafkaClient(brokers);
  const topic = uniqueTopic('shutdown');
  await createTopics(kafka, [topic], PARTITIONS);
  await createTopics(kafka, [`${topic}.dead-letter`]);
  const raw = kafka.producer();
  await raw.connect();
  t.after(() => raw.disconnect());
  const deadLettered: string[] = [];
  const deadLetters = Object.assign(Object.create(raw) as Producer, {
    send: (record: ProducerRecord) => {
      deadLettered.push(...record.messages.map((m) => String(m.value)));
      return raw.send(record);
    },
  });

  const all: string[] = [];
  const messages = [];
  for (let partition = 0; partition < PARTITIONS; partition++) {
    for (let index = 0; index < PER_PARTITION; index++) {
      all.push(name(partition, index));
      messages.push({ partition, value: name(partition, index) });
    }
  }
  await raw.send({ topic, messages });

  // Consumer A. At position AT, partitions 0 and 1 run a handler that would take longer than
  // the grace (it ends only when cancelled); partitions 2 and 3 one that finishes 5 ms after the
  // shutdown begins. Every other handler takes 2 ms.
  const slow = new Set([name(0, AT), name(1, AT)]);
  const held = new Set([name(2, AT), name(3, AT)]);
  let began = Number.POSITIVE_INFINITY;
  let releaseHeld = () => {};
  const shutdownBegun = new Promise<void>((resolve) => {
    releaseHeld = resolve;
  });
  const untilShutdown = (signal: AbortSignal) =>
    new Promise<void>((resolve, reject) => {
      void shutdownBegun.then(resolve);
      signal.addEventListener('abort', () => reject(signal.reason), { once: true });
    });
  const startedA: string[] = [];
  const completedA: string[] = [];
  const completedAfterBegin: string[] = [];
  const cancelledA = new Map<string, string | undefined>();
  const handlerA = async ({ message, ctx }: MessagePayload) => {
    const value = String(message.value);
    startedA.push(value);
    try {
      if (slow.has(value)) await sleep(60_000, undefined, { signal: ctx.signal });
      else if (held.has(value)) {
        await untilShutdown(ctx.signal);
        await sleep(5, undefined, { signal: ctx.signal });
      } else await sleep(2, undefined, { signal: ctx.signal });
    } catch (error) {
      cancelledA.set(value, drained ? 'in the drain' : ctx.cause?.code);
      throw error;
    }
    completedA.push(value);
    if (performance.now() >= began) completedAfterBegin.push(value);
  };

  const groupId = `test-shutdown-${randomUUID()}`;
  const life = shutdown({ grace: GRACE, settleMs: 2_000 });
  // Registered before the consumer's: runs first, so a handler cancelled by the consumer's
  // disconnect rather than by the grace would see it set.
  let drained = false;
  life.onDrain(() => {
    drained = true;
  });
  const innerA = kafka.consumer({ groupId, maxWaitTimeInMs: 100 });
  let disconnectedA = false;
  innerA.on(innerA.events.DISCONNECT, () => {
    disconnectedA = true;
  });
  const a = consumer(innerA, { deadLetterProducer: deadLetters, retryBackoffMs: 10, shutdown: life });
  t.after(() => a.disconnect());
  await a.connect();
  await a.subscribe({ topic, fromBeginning: true });
  await a.run({ partitionsConsumedConcurrently: PARTITIONS, [mode]: handlerA });
  await waitFor(
    `A's handlers at position ${AT} of every partition`,
    () => ([...slow, ...held].every((v) => startedA.includes(v)) ? true : undefined),
    20_000,
  );
  assert.equal(completedA.length, PARTITIONS * AT, 'every message before position AT is handled');
  assert.equal(a.running, PARTITIONS);
  assert.equal(life.inFlight, PARTITIONS, 'each running handler is admitted');

  began = performance.now();
  const done = life.begin();
  releaseHeld();
  await done;
  const took = performance.now() - began;
  assert.equal(life.state, 'stopped');
  assert.ok(disconnectedA, "A's consumer disconnected in the drain");
  assert.equal(a.running, 0);
  assert.ok(
    took >= GRACE - 10 && took < 10_000,
    `shutdown took ${took.toFixed(0)} ms with a grace of ${GRACE}`,
  );

  const expectedA = all.filter((v) => Number(v.split('-')[1]) < AT || held.has(v));
  assert.deepEqual(sorted(completedA), sorted(expectedA), 'A handled what it started, except the slow ones');
  assert.deepEqual(sorted(completedAfterBegin), sorted(held), 'the held handlers finished within the grace');
  assert.deepEqual(
    Object.fromEntries(cancelledA),
    { [name(0, AT)]: 'shutdown', [name(1, AT)]: 'shutdown' },
    'only the handlers that could not finish within the grace were cancelled, with cause shutdown',
  );
  assert.deepEqual(
    sorted(startedA),
    sorted([...expectedA, ...slow]),
    'A started no message after the shutdown began',
  );

  // Committed: everything A handled, nothing it was cancelled in or had not started.
  const admin = kafka.admin();
  await admin.connect();
  try {
    const [offsets] = await admin.fetchOffsets({ groupId, topics: [topic] });
    assert.deepEqual(
      offsets?.partitions.map((p) => [p.partition, p.offset]).sort((x, y) => Number(x[0]) - Number(y[0])),
      [
        [0, String(AT)],
        [1, String(AT)],
        [2, String(AT + 1)],
        [3, String(AT + 1)],
      ],
    );
  } finally {
    await admin.disconnect();
  }

  // Consumer B, in the same group, takes over from the committed offsets.
  const completedB: string[] = [];
  const b = consumer(kafka.consumer({ groupId, maxWaitTimeInMs: 100 }), {
    deadLetterProducer: deadLetters,
    retryBackoffMs: 10,
  });
  t.after(() => b.disconnect());
  await b.connect();
  await b.subscribe({ topic, fromBeginning: true });
  await b.run({
    eachMessage: async ({ message }) => {
      completedB.push(String(message.value));
    },
  });
  await waitFor(
    'every message handled by A or B',
    () => (all.every((v) => completedA.includes(v) || completedB.includes(v)) ? true : undefined),
    20_000,
  );
  // Each partition is read in order, so a message B handled twice, or one of A's handled again,
  // would be in by now.
  assert.deepEqual(
    sorted(completedB),
    sorted(all.filter((v) => !expectedA.includes(v))),
    'B handled exactly the rest, the slow ones included',
  );
  for (const value of slow) assert.ok(completedB.includes(value), `${value} was redelivered to B`);
  assert.deepEqual(deadLettered, [], 'nothing was dead-lettered');
  t.diagnostic(`A handled ${completedA.length}, B ${completedB.length}; shutdown took ${took.toFixed(0)} ms`);
}
