// HTTP → Kafka → consumer → HTTP: the client of the first hop hangs up while the consumer's call to
// the last hop is in progress; the disconnect crosses the queue over the cancel bus and reaches the
// last HTTP hop's handler.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe, it } from 'node:test';
import express from 'express';
import { deadlines } from '../adapters/http/express.ts';
import { fetch } from '../adapters/http/fetch.ts';
import { cancelBus, consumer, producer } from '../adapters/kafka/index.ts';
import { current } from '../sdk/index.ts';
import { listen } from './support/http.ts';
import { kafkaBrokers } from './support/infra.ts';
import { createTopics, kafkaClient, uniqueTopic, waitFor } from './support/kafka.ts';

describe('HTTP → Kafka → consumer → HTTP', () => {
  it("the first client's disconnect reaches the last HTTP hop", async (t) => {
    const brokers = kafkaBrokers(t);
    if (brokers === undefined) return;
    const kafka = kafkaClient(brokers);
    const topic = uniqueTopic('chain');
    const bus = cancelBus(kafka, { topic: uniqueTopic('bus') });
    t.after(() => bus.stop());
    await createTopics(kafka, [topic, `${topic}.dead-letter`]);
    await bus.connect();
    const raw = kafka.producer();
    t.after(() => raw.disconnect());
    await raw.connect();
    const send = producer(raw, { cancelBus: bus });

    // Last hop: waits until its request's context ends, and records why.
    let lastHopStarted = false;
    let lastHopCause: string | undefined;
    const last = express();
    last.use(deadlines());
    last.post('/ship', async (_req, res) => {
      lastHopStarted = true;
      const ctx = current();
      await new Promise<void>((resolve) => ctx.signal.addEventListener('abort', () => resolve()));
      lastHopCause = ctx.cause?.code;
      res.end();
    });
    const lastServer = await listen(last);
    t.after(() => lastServer.close());

    // First hop: publishes the order under its request's context, then works until that ends.
    const first = express();
    first.use(deadlines({ budgetMs: 10_000 }));
    first.post('/order', async (_req, res) => {
      await send.send({ topic, messages: [{ value: 'order' }] });
      const ctx = current();
      await new Promise<void>((resolve) => ctx.signal.addEventListener('abort', () => resolve()));
      res.end();
    });
    const firstServer = await listen(first);
    t.after(() => firstServer.close());

    // The worker: calls the last hop under the message's context.
    let workerCause: string | undefined;
    const worker = consumer(kafka.consumer({ groupId: `chain-${randomUUID()}`, maxWaitTimeInMs: 100 }), {
      deadLetterProducer: raw,
      cancelBus: bus,
    });
    t.after(() => worker.disconnect());
    await worker.connect();
    await worker.subscribe({ topic, fromBeginning: true });
    await worker.run({
      eachMessage: async ({ ctx }) => {
        try {
          await fetch(`${lastServer.url}/ship`, { method: 'POST' });
        } finally {
          workerCause = ctx.cause?.code;
        }
      },
    });

    const client = new AbortController();
    const answer = globalThis.fetch(`${firstServer.url}/order`, { method: 'POST', signal: client.signal });
    answer.catch(() => {});
    await waitFor('the last hop to start', () => (lastHopStarted ? true : undefined));
    client.abort();
    await waitFor('the last hop to end', () => lastHopCause);
    await waitFor("the worker's call to end", () => workerCause);
    assert.equal(
      workerCause,
      'client_disconnected',
      "the worker's context ended with the first client's cause",
    );
    assert.equal(lastHopCause, 'upstream_cancelled', 'the last hop saw its caller cancel');
  });
});
