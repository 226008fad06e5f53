/**
 * One consumer instance of a conformance wiring, in a process of its own: `explicit` (consumer()
 * with a cancel bus) or `init` (init() and an unchanged kafkajs consumer). Dead letters go to
 * `<topic>.dead-letter`. Reports as JSON lines.
 */
import type { KafkaMessage } from 'kafkajs';

/** What the worker is told. */
export interface ConformanceWorkerConfig {
  wiring: 'explicit' | 'init';
  brokers: string[];
  topic: string;
  groupId: string;
  busTopic: string;
}

const config = JSON.parse(process.argv[2] ?? '{}') as ConformanceWorkerConfig;
const report = (event: object) => process.stdout.write(`${JSON.stringify(event)}\n`);

if (config.wiring === 'init') {
  const { init } = await import('../../init/index.ts');
  init({
    tracing: false,
    kafka: { cancelBus: { topic: config.busTopic }, deadLetterTopic: (topic) => `${topic}.dead-letter` },
  });
}
const { current } = await import('../../sdk/index.ts');
const { kafkaClient } = await import('../support/kafka.ts');
const kafka = kafkaClient(config.brokers, `conformance-worker-${process.pid}`);

// Every message blocks until its context ends, then fails with its error.
const handle = async (message: KafkaMessage) => {
  const ctx = current();
  report({ type: 'start', value: String(message.value) });
  await new Promise<void>((resolve) => ctx.signal.addEventListener('abort', () => resolve()));
  report({ type: 'end', value: String(message.value), cause: ctx.cause?.code });
  throw ctx.signal.reason;
};

const inner = kafka.consumer({ groupId: config.groupId, maxWaitTimeInMs: 100 });
let close: () => Promise<unknown>;
if (config.wiring === 'init') {
  await inner.connect();
  await inner.subscribe({ topic: config.topic, fromBeginning: true });
  await inner.run({ eachMessage: ({ message }) => handle(message) });
  close = () => inner.disconnect();
} else {
  const { cancelBus, consumer } = await import('../../adapters/kafka/index.ts');
  const dlq = kafka.producer();
  await dlq.connect();
  const bus = cancelBus(kafka, { topic: config.busTopic });
  const c = consumer(inner, { deadLetterProducer: dlq, cancelBus: bus });
  await c.connect();
  await c.subscribe({ topic: config.topic, fromBeginning: true });
  await c.run({ eachMessage: ({ message }) => handle(message) });
  close = () => Promise.all([c.disconnect(), dlq.disconnect(), bus.stop()]);
}
report({ type: 'ready' });
process.on('SIGTERM', () => void close().finally(() => process.exit(0)));
