// A consumer whose clock runs 30 s off the producer's (libfaketime): it is never granted more than
// the producer had left when it sent; ahead of the producer, the message expires unless the skew
// allowance covers the offset or inbound absolute deadlines are ignored.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import { describe, it, type TestContext } from 'node:test';
import { producer } from '../adapters/kafka/index.ts';
import { background, withTimeout } from '../sdk/context.ts';
import { kafkaBrokers, unavailable } from './support/infra.ts';
import { createTopics, kafkaClient, uniqueTopic, waitFor } from './support/kafka.ts';
import type { WorkerConfig } from './support/kafka-worker.ts';
import { startWorker, stopWorker } from './support/kafka-workers.ts';

const BUDGET_MS = 2_000;

type Outcome = { handled: number; skewMs: number } | { deadLettered: string };

/** Sends one message with BUDGET_MS left, then consumes it in a worker whose clock is `shift` off. */
async function consumeShifted(
  t: TestContext,
  shift: '+30s' | '-30s',
  options: WorkerConfig['options'] = {},
): Promise<Outcome | undefined> {
  const brokers = kafkaBrokers(t);
  if (brokers === undefined) return undefined;
  const libfaketime = fs.globSync('/usr/lib/*/faketime/libfaketimeMT.so.1')[0];
  if (libfaketime === undefined)
    return unavailable(t, 'libfaketime not installed (apt-get install faketime)');
  const kafka = kafkaClient(brokers);
  const topic = uniqueTopic('skew');
  await createTopics(kafka, [topic, `${topic}.dead-letter`]);
  const raw = kafka.producer();
  t.after(() => raw.disconnect());
  await raw.connect();
  {
    const ctx = withTimeout(background(), BUDGET_MS);
    try {
      await ctx.run(() => producer(raw).send({ topic, messages: [{ value: 'skewed' }] }));
    } finally {
      ctx.cancel();
    }
  }
  const worker = startWorker(
    0,
    { brokers, topic, groupId: `skew-${randomUUID()}`, mode: 'record', options },
    // libfaketime preloaded into the worker itself (the faketime command would fork a parent of it).
    { LD_PRELOAD: libfaketime, FAKETIME: shift, DONT_FAKE_MONOTONIC: '1' },
  );
  t.after(() => stopWorker(worker));
  let deadLettered: string | undefined;
  const reader = kafka.consumer({ groupId: `skew-dlq-${randomUUID()}`, maxWaitTimeInMs: 100 });
  t.after(() => reader.disconnect());
  await reader.connect();
  await reader.subscribe({ topic: `${topic}.dead-letter`, fromBeginning: true });
  await reader.run({
    eachMessage: async ({ message }) => {
      deadLettered = String(message.headers?.['ctx-cancel-reason']);
    },
  });
  const outcome = await waitFor<Outcome>(
    'the message handled or dead-lettered',
    () => {
      const event = worker.events.find((e) => e.type === 'handled');
      if (event?.type === 'handled') return { handled: event.remaining, skewMs: event.now - Date.now() };
      return deadLettered === undefined ? undefined : { deadLettered };
    },
    15_000,
  );
  assert.ok(outcome, 'the message was handled or dead-lettered');
  return outcome;
}

describe('ctxflow/kafka under clock skew (consumer clock shifted 30 s)', () => {
  it('a consumer 30 s behind gets no more than the producer had left, not 30 s more', async (t) => {
    const outcome = await consumeShifted(t, '-30s');
    if (!outcome) return;
    assert.ok('handled' in outcome, JSON.stringify(outcome));
    assert.ok(outcome.handled > 0 && outcome.handled <= BUDGET_MS, `granted ${outcome.handled} ms`);
    assert.ok(Math.abs(outcome.skewMs + 30_000) < 5_000, `the worker's clock is ${outcome.skewMs} ms off`);
  });

  it('a consumer 30 s ahead sees the message expired, and dead-letters it', async (t) => {
    const outcome = await consumeShifted(t, '+30s');
    if (!outcome) return;
    assert.deepEqual(outcome, { deadLettered: 'deadline_exceeded' });
  });

  it('a consumer 30 s ahead handles it with a skew allowance, still within what the producer had', async (t) => {
    const outcome = await consumeShifted(t, '+30s', { skewAllowanceMs: 35_000 });
    if (!outcome) return;
    assert.ok(
      'handled' in outcome && outcome.handled > 0 && outcome.handled <= BUDGET_MS,
      JSON.stringify(outcome),
    );
  });

  it('a consumer that ignores inbound absolute deadlines falls back to ctx-timeout and its budget', async (t) => {
    const outcome = await consumeShifted(t, '+30s', { ignoreInboundDeadline: true });
    if (!outcome) return;
    assert.ok(
      'handled' in outcome && outcome.handled > 0 && outcome.handled <= BUDGET_MS,
      JSON.stringify(outcome),
    );
  });
});
