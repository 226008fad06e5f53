/**
 * HTTP → Kafka → consumer with every service under init() only: a node:http service publishes two
 * messages of a request with a plain kafkajs producer; the consumer, an unchanged kafkajs app in
 * another process, is handling the first when the client goes away. Its handler is aborted with
 * `client_disconnected` (through the cancel bus), and the second message is dead-lettered with
 * that cause, never handled.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { after, test } from 'node:test';
import { init } from '../init/index.ts';

const busTopic = `test.init-cancel.bus.${randomUUID().slice(0, 8)}`;
const telemetry = init({
  tracing: false,
  kafka: { cancelBus: { topic: busTopic }, deadLetterTopic: (topic) => `${topic}.dead-letter` },
});
after(() => telemetry.shutdown());

const { current } = await import('../sdk/index.ts');
const { kafkaBrokers } = await import('./support/infra.ts');
const { createTopics, kafkaClient, readTopic, uniqueTopic, waitFor } = await import('./support/kafka.ts');
const { startWorker, stopWorker } = await import('./support/kafka-workers.ts');

test('the client goes away: the consumer’s running handler is aborted, the request’s later message dead-lettered unhandled', async (t) => {
  const brokers = kafkaBrokers(t);
  if (brokers === undefined) return;
  const kafka = kafkaClient(brokers);
  const topic = uniqueTopic('init-cancel');
  await createTopics(kafka, [topic, `${topic}.dead-letter`]);

  // The service: an unchanged node:http app with a plain kafkajs producer.
  const producer = kafka.producer();
  await producer.connect();
  t.after(() => producer.disconnect());
  const server = http.createServer(async (_req, res) => {
    await producer.send({ topic, messages: [{ value: 'first' }, { value: 'second' }] });
    res.writeHead(200).flushHeaders();
    // Holds the request open until it ends: here, when the client goes away.
    current().signal.addEventListener('abort', () => res.end());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => server.close());

  const worker = startWorker(
    0,
    { wiring: 'init', brokers, topic, groupId: `g-${randomUUID()}`, busTopic },
    {},
    path.join(import.meta.dirname, 'conformance', 'kafka-worker.ts'),
  );
  t.after(() => stopWorker(worker));
  await waitFor('the consumer', () => worker.events.find((e) => e.type === 'ready'), 30_000);

  const request = http.request({ port: (server.address() as AddressInfo).port, method: 'POST' });
  request.on('error', () => {});
  request.end();
  await waitFor('the first message’s handler', () => worker.events.find((e) => e.type === 'start'), 20_000);
  request.destroy();

  const end = await waitFor('the abort', () => worker.events.find((e) => e.type === 'end'), 20_000);
  assert.deepEqual(end, { type: 'end', value: 'first', cause: 'client_disconnected' });
  const dead = await readTopic(kafka, `${topic}.dead-letter`, 2, 20_000);
  const second = dead.find((m) => m.value === 'second');
  assert.equal(second?.headers['ctx-cancel-reason'], 'client_disconnected');
  assert.equal(second?.headers['ctx-dead-letter-attempts'], '0');
  assert.deepEqual(
    worker.events.filter((e) => e.type === 'start').map((e) => (e as { value: string }).value),
    ['first'],
    'the second message never reached the handler',
  );
});
