/**
 * The Kafka conformance suite against init() and an unchanged kafkajs application: plain
 * producers and consumers, a dead-letter topic and the cancel bus set in init's options only.
 */
import { randomUUID } from 'node:crypto';
import { after } from 'node:test';
import { init } from '../init/index.ts';

const busTopic = `test.conformance.bus.${randomUUID().slice(0, 8)}`;
const telemetry = init({
  tracing: false,
  kafka: { deadLetterTopic: (topic) => `${topic}.dead-letter`, cancelBus: { topic: busTopic } },
});
after(() => telemetry.shutdown());

const { kafkaConformance } = await import('./conformance/kafka.ts');
const { collectMetrics } = await import('./support/metrics.ts');

kafkaConformance(
  {
    name: 'init',
    busTopic,
    async producer(kafka) {
      const producer = kafka.producer();
      await producer.connect();
      return {
        send: async (topic, values) => {
          await producer.send({ topic, messages: values.map((value) => ({ value })) });
        },
        close: () => producer.disconnect(),
      };
    },
    async consumer(kafka, topic, groupId, handler) {
      const consumer = kafka.consumer({ groupId, maxWaitTimeInMs: 100, heartbeatInterval: 100 });
      await consumer.connect();
      await consumer.subscribe({ topic, fromBeginning: true });
      await consumer.run({ eachMessage: ({ message }) => handler(message) });
      return { close: () => consumer.disconnect() };
    },
  },
  collectMetrics(),
);
