// Smoke test of the test infrastructure itself: the real broker and the real Jaeger.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { test } from 'node:test';
import { context, ROOT_CONTEXT } from '@opentelemetry/api';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { SimpleSpanProcessor, TracerProvider } from '@opentelemetry/sdk-trace';
import { ATTR_SERVICE_NAME } from '@opentelemetry/semantic-conventions';
import type { KafkaMessage } from 'kafkajs';
import { jaeger, kafkaBrokers, waitForTrace } from './support/infra.ts';
import { createTopics, kafkaClient } from './support/kafka.ts';

function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

test('Kafka: a message with headers goes through the broker', { timeout: 60_000 }, async (t) => {
  const brokers = kafkaBrokers(t);
  if (!brokers) return;
  const topic = `ctxflow-infra-${randomUUID()}`;
  // The first group join logs a transient "coordinator not available" error; failures still surface as rejections.
  const kafka = kafkaClient(brokers, 'ctxflow-infra-test');
  const producer = kafka.producer();
  const consumer = kafka.consumer({ groupId: `${topic}-group` });
  t.after(() => Promise.allSettled([producer.disconnect(), consumer.disconnect()]));

  // Until the broker's metadata names the topic's leader: a broker started a moment ago may answer
  // a subscribe with UNKNOWN_TOPIC_OR_PARTITION after the creation itself returned.
  await createTopics(kafka, [topic]);
  await consumer.connect();
  await consumer.subscribe({ topics: [topic], fromBeginning: true });
  const received = new Promise<KafkaMessage>((resolve, reject) => {
    // A retriable error (GROUP_LOAD_IN_PROGRESS from a broker started a moment ago) crashes the
    // consumer, which kafkajs restarts: only a crash it does not recover from fails the test.
    consumer.on(consumer.events.CRASH, ({ payload }) => {
      if (!payload.restart) reject(payload.error);
    });
    // From ROOT: the consumer loop must not run inside this test's context.
    context
      .with(ROOT_CONTEXT, () => consumer.run({ eachMessage: async ({ message }) => resolve(message) }))
      .catch(reject);
  });

  await producer.connect();
  await producer.send({
    topic,
    messages: [{ key: 'k', value: 'hello', headers: { 'x-ctxflow-test': 'yes', repeated: ['a', 'b'] } }],
  });
  const message = await within(received, 30_000, 'consume the message');

  assert.equal(message.key?.toString(), 'k');
  assert.equal(message.value?.toString(), 'hello');
  assert.equal(message.headers?.['x-ctxflow-test']?.toString(), 'yes');
  const repeated = message.headers?.repeated;
  assert.ok(Array.isArray(repeated), 'a repeated header arrives as an array');
  assert.deepEqual(
    repeated.map((value) => value.toString()),
    ['a', 'b'],
  );
});

test('Jaeger: a span exported over OTLP/HTTP can be read back', { timeout: 30_000 }, async (t) => {
  const endpoints = jaeger(t);
  if (!endpoints) return;
  const serviceName = `ctxflow-infra-test-${randomUUID().slice(0, 8)}`;
  const provider = new TracerProvider({
    resource: resourceFromAttributes({ [ATTR_SERVICE_NAME]: serviceName }),
    spanProcessors: [
      new SimpleSpanProcessor({
        exporter: new OTLPTraceExporter({ url: `${endpoints.otlpEndpoint}/v1/traces` }),
      }),
    ],
  });
  const span = provider
    .getTracer('ctxflow-infra-test')
    .startSpan('infra-smoke', { attributes: { 'ctxflow.check': 'yes', 'ctxflow.count': 42 } }, ROOT_CONTEXT);
  span.addEvent('halfway');
  span.end();
  await provider.shutdown(); // flushes the export

  const { traceId, spanId } = span.spanContext();
  const trace = await waitForTrace(endpoints.url, traceId);
  const stored = trace.spans.find((s) => s.spanID === spanId);
  assert.ok(stored, 'the exported span is in the trace');
  assert.equal(stored.operationName, 'infra-smoke');
  assert.equal(trace.processes[stored.processID]?.serviceName, serviceName);
  const tags = Object.fromEntries(stored.tags.map(({ key, value }) => [key, value]));
  assert.equal(tags['ctxflow.check'], 'yes');
  assert.equal(tags['ctxflow.count'], 42);
  assert.ok(stored.logs.some((log) => log.fields.some((f) => f.key === 'event' && f.value === 'halfway')));
});
