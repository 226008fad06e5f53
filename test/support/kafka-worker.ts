/**
 * One consumer instance for the multi-process Kafka tests, run as its own process (possibly under
 * faketime). Configured by one JSON argument; reports what happens as JSON lines on stdout.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { type ConsumerOptions, cancelBus, consumer } from '../../adapters/kafka/index.ts';
import { kafkaClient } from './kafka.ts';

/** What a worker is told to do. */
export interface WorkerConfig {
  brokers: string[];
  topic: string;
  groupId: string;
  busTopic?: string;
  /** block: wait for the context to end, then fail with its error; record: return at once; slow: take delayMs. */
  mode: 'block' | 'record' | 'slow';
  delayMs?: number;
  options?: Pick<ConsumerOptions, 'onExpired' | 'skewAllowanceMs' | 'ignoreInboundDeadline' | 'budgetMs'>;
}

/** A line a worker writes. */
export type WorkerEvent =
  | { type: 'assigned'; partitions: number[] }
  | { type: 'ready' }
  | { type: 'cancel-seen'; requestId: string }
  | { type: 'start'; value: string; requestId?: string; partition: number; remaining: number; now: number }
  | { type: 'end'; value: string; requestId?: string; cause?: string; message?: string }
  | { type: 'handled'; value: string; remaining: number; now: number };

function report(event: WorkerEvent): void {
  process.stdout.write(`${JSON.stringify(event)}\n`);
}

const config = JSON.parse(process.argv[2] ?? '{}') as WorkerConfig;
const kafka = kafkaClient(config.brokers, `worker-${process.pid}`);
const dlq = kafka.producer();
await dlq.connect();
const bus = config.busTopic === undefined ? undefined : cancelBus(kafka, { topic: config.busTopic });
bus?.onCancel((requestId) => report({ type: 'cancel-seen', requestId }));
await bus?.connect();
const inner = kafka.consumer({
  groupId: config.groupId,
  maxWaitTimeInMs: 100,
  sessionTimeout: 6_000,
  heartbeatInterval: 500,
});
inner.on(inner.events.GROUP_JOIN, ({ payload }) => {
  report({ type: 'assigned', partitions: Object.values(payload.memberAssignment).flat() });
});
const c = consumer(inner, {
  deadLetterProducer: dlq,
  cancelBus: bus,
  sessionTimeout: 6_000,
  heartbeatIntervalMs: 500,
  ...config.options,
});
await c.connect();
await c.subscribe({ topic: config.topic, fromBeginning: true });
await c.run({
  partitionsConsumedConcurrently: 6,
  eachMessage: async ({ message, ctx, requestId, partition }) => {
    const value = String(message.value);
    if (config.mode === 'record') {
      report({ type: 'handled', value, remaining: ctx.remaining(), now: Date.now() });
      return;
    }
    report({ type: 'start', value, requestId, partition, remaining: ctx.remaining(), now: Date.now() });
    if (config.mode === 'slow') {
      await sleep(config.delayMs ?? 20, undefined, { signal: ctx.signal });
      report({ type: 'handled', value, remaining: ctx.remaining(), now: Date.now() });
      return;
    }
    await new Promise<void>((resolve) => ctx.signal.addEventListener('abort', () => resolve()));
    report({ type: 'end', value, requestId, cause: ctx.cause?.code, message: ctx.cause?.message });
    throw ctx.signal.reason;
  },
});
report({ type: 'ready' });

process.on('SIGTERM', () => {
  void Promise.all([c.disconnect(), dlq.disconnect(), bus?.stop()]).finally(() => process.exit(0));
});
