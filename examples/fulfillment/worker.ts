import { cancelBus, consumer } from 'ctxflow/kafka';
import { Kafka, logLevel } from 'kafkajs';
import { log } from '../log.ts';

const SHIPPING = process.env.SHIPPING_URL ?? 'http://127.0.0.1:8083';
const kafka = new Kafka({
  brokers: (process.env.KAFKA_BROKERS ?? '127.0.0.1:9092').split(','),
  logLevel: logLevel.NOTHING,
});
const deadLetters = kafka.producer();
await deadLetters.connect();

const orders = consumer(kafka.consumer({ groupId: 'fulfillment' }), {
  onExpired: 'dead-letter', // waited in the queue past its deadline: to orders.dead-letter, with the cause
  deadLetterProducer: deadLetters,
  cancelBus: cancelBus(kafka), // the request that sent a message is cancelled: its handler stops
});
await orders.connect();
await orders.subscribe({ topic: 'orders' });
await orders.run({
  eachMessage: async ({ message, ctx }) => {
    const order = JSON.parse(String(message.value));
    log('arrived', { sku: order.sku });
    // A plain fetch again: what is left of the message's deadline, aborted with its context.
    const answer = await fetch(`${SHIPPING}/ship?${new URLSearchParams(order)}`, { signal: ctx.signal });
    if (!answer.ok) throw new Error(`shipping answered ${answer.status}`);
  },
});
console.log(JSON.stringify({ service: 'fulfillment', event: 'listening', port: 0 }));

for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.once(signal, async () => {
    await orders.disconnect();
    await deadLetters.disconnect();
    process.exit(0);
  });
}
