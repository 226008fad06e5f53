// Against the three-broker cluster (replication factor 3, min.insync.replicas 2): stopping one
// broker mid-stream loses no message and stalls producing and consuming no longer than the
// clients' own retries; the stopped broker is started again afterwards.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { consumer, producer } from '../adapters/kafka/index.ts';
import { stopNode } from '../scripts/infra/index.ts';
import { background, withTimeout } from '../sdk/index.ts';
import { kafkaClusterAlone } from './support/infra.ts';
import { createTopics, kafkaClient, uniqueTopic, waitFor } from './support/kafka.ts';

const MESSAGES = 300;

describe('ctxflow/kafka on a three-broker cluster', () => {
  it('stopping one broker mid-stream loses nothing', async (t) => {
    const brokers = await kafkaClusterAlone(t);
    if (brokers === undefined) return;
    const kafka = kafkaClient(brokers);
    const topic = uniqueTopic('cluster');
    await createTopics(kafka, [topic, `${topic}.dead-letter`], 3);
    const raw = kafka.producer();
    t.after(() => raw.disconnect());
    await raw.connect();
    const send = producer(raw);
    const handled = new Set<string>();
    const c = consumer(kafka.consumer({ groupId: `cluster-${randomUUID()}`, maxWaitTimeInMs: 100 }), {
      deadLetterProducer: raw,
    });
    t.after(() => c.disconnect());
    await c.connect();
    await c.subscribe({ topic, fromBeginning: true });
    await c.run({ eachMessage: async ({ message }) => void handled.add(String(message.value)) });

    let longestSendMs = 0;
    let restart: (() => Promise<void>) | undefined;
    for (let i = 0; i < MESSAGES; i += 10) {
      if (i === 100) restart = await stopNode('kafka-cluster', 1);
      const messages = Array.from({ length: 10 }, (_, j) => ({ value: `m${i + j}`, key: `k${(i + j) % 7}` }));
      const start = performance.now();
      const ctx = withTimeout(background(), 60_000);
      try {
        await ctx.run(() => send.send({ topic, messages }));
        longestSendMs = Math.max(longestSendMs, performance.now() - start);
        await sleep(5);
      } finally {
        ctx.cancel();
      }
    }
    await waitFor('every message handled', () => (handled.size === MESSAGES ? true : undefined), 30_000);
    t.diagnostic(`longest send while a broker was down: ${longestSendMs.toFixed(0)} ms`);
    assert.ok(restart);
    await restart();
  });
});
