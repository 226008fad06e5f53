import { background, run, withTimeout } from 'ctxflow';
import { consumer, producer } from 'ctxflow/kafka';
import { Kafka } from 'kafkajs';

const brokers = (process.env.KAFKA_BROKERS ?? '127.0.0.1:9092').split(',');
const topic = process.env.ORDERS_TOPIC ?? 'orders';
const kafka = new Kafka({ clientId: 'orders', brokers });

const admin = kafka.admin();
await admin.connect();
await admin.createTopics({ topics: [{ topic }, { topic: `${topic}.dead-letter` }] });
await admin.disconnect();

// The producer side (an orders service): each message carries its trace, its deadline and a request id.
const orders = producer(kafka.producer());
await orders.connect();
await run(withTimeout(background(), 30_000), () =>
  orders.send({ topic, messages: [{ key: 'sku-42', value: '{"sku":"42"}' }] }),
);
// A request with 50 ms left: its message expires in the queue before the worker below starts.
await run(withTimeout(background(), 50), () =>
  orders.send({ topic, messages: [{ key: 'sku-43', value: '{"sku":"43"}' }] }),
);
await new Promise((resolve) => setTimeout(resolve, 100));

// The worker side (a fulfillment service): each message runs in its own context; expired ones are
// dead-lettered to `${topic}.dead-letter` by this producer, and their handler does not run.
const deadLetters = kafka.producer();
await deadLetters.connect();
const worker = consumer(kafka.consumer({ groupId: 'fulfillment' }), { deadLetterProducer: deadLetters });
await worker.connect();
await worker.subscribe({ topic, fromBeginning: true });
await worker.run({
  eachMessage: async ({ message, ctx }) => {
    // ctx: this message's context; pass ctx.signal to the work it starts (fetch, database, ...).
    console.log(`handled ${message.key?.toString()} with ${ctx.remaining()} ms left`);
  },
});

process.once('SIGTERM', async () => {
  await worker.disconnect();
  await Promise.all([deadLetters.disconnect(), orders.disconnect()]);
});
