/** The Kafka conformance suite against the explicit adapter: producer(), consumer() and cancelBus() of ctxflow/kafka. */
import { randomUUID } from 'node:crypto';
import { cancelBus, consumer, producer } from '../adapters/kafka/index.ts';
import { kafkaConformance } from './conformance/kafka.ts';
import { collectMetrics } from './support/metrics.ts';

const busTopic = `test.conformance.bus.${randomUUID().slice(0, 8)}`;

kafkaConformance(
  {
    name: 'explicit',
    busTopic,
    async producer(kafka) {
      const bus = cancelBus(kafka, { topic: busTopic });
      await bus.connect();
      const raw = kafka.producer();
      await raw.connect();
      const send = producer(raw, { cancelBus: bus });
      return {
        send: async (topic, values) => {
          await send.send({ topic, messages: values.map((value) => ({ value })) });
        },
        close: () => Promise.all([raw.disconnect(), bus.stop()]),
      };
    },
    async consumer(kafka, topic, groupId, handler) {
      const dlq = kafka.producer();
      await dlq.connect();
      const bus = cancelBus(kafka, { topic: busTopic });
      const c = consumer(kafka.consumer({ groupId, maxWaitTimeInMs: 100, heartbeatInterval: 100 }), {
        deadLetterProducer: dlq,
        cancelBus: bus,
        heartbeatIntervalMs: 100,
        retries: 0,
      });
      await c.connect();
      await c.subscribe({ topic, fromBeginning: true });
      await c.run({ eachMessage: ({ message }) => handler(message) });
      return { close: () => Promise.all([c.disconnect(), dlq.disconnect(), bus.stop()]) };
    },
  },
  collectMetrics(),
);
