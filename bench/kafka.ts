// Kafka bench, against the broker in KAFKA_BROKERS (eval "$(npm run -s infra -- env)"):
//   produce   BENCH_MESSAGES messages in sends of BENCH_BATCH, kafkajs alone vs the ctxflow producer
//             (each send under a fresh 30 s context): messages/s, CPU of this process per message;
//             a third variant sends, with kafkajs alone, three fixed headers of the same sizes as
//             ctxflow's (what carrying the headers costs in kafkajs, apart from ctxflow);
//   consume   the same number, eachMessage with a no-op handler, kafkajs alone vs the ctxflow
//             consumer (context per message, expiry check, heartbeat timer), timed from the first
//             message (the group join is not counted); again with a handler that works BENCH_WORK_US;
//   cancel    three consumer instances in one group over six partitions, each with its own cancel
//             bus reader: cancel() of the producing context → the running handler's signal,
//             BENCH_CANCEL_TRIALS trials across the partitions, p50/p99;
//   idle bus  one bus reader with nothing to read: fetch requests per second, resident memory.
// Variants are interleaved (kafkajs, ctxflow, kafkajs, ...), medians of BENCH_ROUNDS with their range;
// a fresh topic (three partitions) per run. Environment: BENCH_ROUNDS (3), BENCH_MESSAGES (20000),
// BENCH_BATCH (100), BENCH_CANCEL_TRIALS (200), BENCH_WORK_US (50).
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { type Consumer, Kafka, logLevel, type Producer } from 'kafkajs';
import { cancelBus, consumer, producer } from '../adapters/kafka/index.ts';
import { background, withCancel, withTimeout } from '../sdk/context.ts';
import { median, range } from './support/stats.ts';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const MESSAGES = Number(process.env.BENCH_MESSAGES ?? 20_000);
const BATCH = Number(process.env.BENCH_BATCH ?? 100);
const CANCEL_TRIALS = Number(process.env.BENCH_CANCEL_TRIALS ?? 200);
const WORK_US = Number(process.env.BENCH_WORK_US ?? 50);
const PARTITIONS = 3;
const brokers = (process.env.KAFKA_BROKERS ?? '').split(',').filter(Boolean);
if (brokers.length === 0) {
  console.error('KAFKA_BROKERS is not set: eval "$(npm run -s infra -- env)" first');
  process.exit(2);
}

const client = (id: string) => new Kafka({ clientId: id, brokers, logLevel: logLevel.NOTHING });
const kafka = client('bench');
const admin = kafka.admin();
await admin.connect();

async function topic(partitions = PARTITIONS): Promise<string> {
  const name = `bench.${randomUUID().slice(0, 8)}`;
  await admin.createTopics({ waitForLeaders: true, topics: [{ topic: name, numPartitions: partitions }] });
  return name;
}

const value = 'x'.repeat(100);
const batch = Array.from({ length: BATCH }, () => ({ value }));
const sameSizeHeaders = {
  'ctx-timeout': '29999',
  'ctx-deadline': String(Date.now()),
  'ctx-request-id': 'x'.repeat(16),
};
const batchWithHeaders = batch.map((m) => ({ ...m, headers: sameSizeHeaders }));

type Variant = 'kafkajs' | 'headers' | 'ctxflow';

interface Run {
  perSecond: number;
  cpuUsPerMessage: number;
}

async function timed(work: () => Promise<void>): Promise<Run> {
  const cpu = process.cpuUsage();
  const start = performance.now();
  await work();
  const seconds = (performance.now() - start) / 1000;
  const used = process.cpuUsage(cpu);
  return { perSecond: MESSAGES / seconds, cpuUsPerMessage: (used.user + used.system) / MESSAGES };
}

async function produce(send: Producer, variant: Variant, to: string): Promise<void> {
  for (let sent = 0; sent < MESSAGES; sent += BATCH) {
    if (variant !== 'ctxflow') {
      await send.send({ topic: to, messages: variant === 'kafkajs' ? batch : batchWithHeaders });
    } else {
      const ctx = withTimeout(background(), 30_000);
      try {
        await ctx.run(() => send.send({ topic: to, messages: batch }));
      } finally {
        ctx.cancel();
      }
    }
  }
}

/** Spins for `us` microseconds: a handler's own work. */
function work(us: number): void {
  const end = performance.now() + us / 1000;
  while (performance.now() < end);
}

async function consume(
  variant: 'kafkajs' | 'ctxflow',
  from: string,
  dlq: Producer,
  workUs: number,
): Promise<Run> {
  const inner = kafka.consumer({ groupId: `bench-${randomUUID()}`, maxWaitTimeInMs: 100 });
  let count = 0;
  let first = 0;
  let cpu = process.cpuUsage();
  let done: () => void = () => {};
  const finished = new Promise<void>((resolve) => {
    done = resolve;
  });
  const seen = () => {
    if (count++ === 0) {
      first = performance.now();
      cpu = process.cpuUsage();
    }
    if (count === MESSAGES) done();
  };
  const c: Pick<Consumer, 'connect' | 'subscribe' | 'disconnect'> & {
    run(config: { eachMessage: () => Promise<void> }): Promise<void>;
  } = variant === 'kafkajs' ? inner : consumer(inner, { deadLetterProducer: dlq });
  await c.connect();
  await c.subscribe({ topic: from, fromBeginning: true });
  await c.run({
    eachMessage: async () => {
      if (workUs > 0) work(workUs);
      seen();
    },
  });
  await finished;
  const seconds = (performance.now() - first) / 1000;
  const used = process.cpuUsage(cpu);
  await c.disconnect();
  // The first message is not part of the window.
  return { perSecond: (MESSAGES - 1) / seconds, cpuUsPerMessage: (used.user + used.system) / (MESSAGES - 1) };
}

function summary(label: string, runs: Run[]): { rate: number; line: string } {
  const rates = runs.map((r) => r.perSecond);
  const cpu = runs.map((r) => r.cpuUsPerMessage);
  const rate = median(rates);
  return {
    rate,
    line: `${label.padEnd(18)} ${Math.round(rate).toString().padStart(7)} msg/s (${range(rates, 0)}), CPU ${median(cpu).toFixed(1)} us/msg (${range(cpu, 1)})`,
  };
}

const raw = kafka.producer();
await raw.connect();
const wrapped = producer(raw);

const producing: Record<Variant, Run[]> = { kafkajs: [], headers: [], ctxflow: [] };
const consuming: Record<'kafkajs' | 'ctxflow', Run[]> = { kafkajs: [], ctxflow: [] };
const consumingWithWork: Record<'kafkajs' | 'ctxflow', Run[]> = { kafkajs: [], ctxflow: [] };
// One warm-up of each producer path, not counted.
await produce(raw, 'kafkajs', await topic());
await produce(wrapped, 'ctxflow', await topic());
for (let round = 0; round < ROUNDS; round++) {
  for (const variant of ['kafkajs', 'headers', 'ctxflow'] as const) {
    const to = await topic();
    producing[variant].push(await timed(() => produce(variant === 'kafkajs' ? raw : wrapped, variant, to)));
  }
}
// Consumers read messages written by the ctxflow producer (headers to parse for both variants).
const filled = await topic();
await produce(wrapped, 'ctxflow', filled);
for (let round = 0; round < ROUNDS; round++) {
  for (const variant of ['kafkajs', 'ctxflow'] as const) {
    consuming[variant].push(await consume(variant, filled, raw, 0));
    consumingWithWork[variant].push(await consume(variant, filled, raw, WORK_US));
  }
}

console.log(
  `kafkajs 2.2.4, ${MESSAGES} messages of ${value.length} B, ${PARTITIONS} partitions, ${ROUNDS} rounds, one broker`,
);
for (const [name, runs] of [
  ['produce', producing as Record<'kafkajs' | 'ctxflow', Run[]>],
  ['consume', consuming],
  [`consume, ${WORK_US} us handler`, consumingWithWork],
] as const) {
  const bare = summary(`${name} kafkajs`, runs.kafkajs);
  const ours = summary(`${name} ctxflow`, runs.ctxflow);
  console.log(bare.line);
  if (name === 'produce') {
    const headers = summary('produce +3 headers', producing.headers);
    console.log(headers.line);
    console.log(`produce ratio kafkajs+3 headers/kafkajs: ${(headers.rate / bare.rate).toFixed(3)}`);
  }
  console.log(ours.line);
  console.log(`${name} ratio ctxflow/kafkajs: ${(ours.rate / bare.rate).toFixed(3)}`);
}

// Cancel latency with three instances, each with its own client and bus reader.
{
  const dataTopic = await topic(6);
  const busTopic = `bench.bus.${randomUUID().slice(0, 8)}`;
  const groupId = `bench-cancel-${randomUUID()}`;
  const aborted = new Map<string, number>();
  const started = new Set<string>();
  const instances = await Promise.all(
    [0, 1, 2].map(async (i) => {
      const k = client(`bench-instance-${i}`);
      const bus = cancelBus(k, { topic: busTopic });
      const c = consumer(k.consumer({ groupId, maxWaitTimeInMs: 100 }), {
        deadLetterProducer: raw,
        cancelBus: bus,
        onExpired: 'skip',
      });
      await c.connect();
      await c.subscribe({ topic: dataTopic, fromBeginning: true });
      await c.run({
        partitionsConsumedConcurrently: 6,
        eachMessage: async ({ message, ctx }) => {
          const id = String(message.value);
          started.add(id);
          await new Promise<void>((resolve) => ctx.signal.addEventListener('abort', () => resolve()));
          aborted.set(id, performance.now());
        },
      });
      return { c, bus };
    }),
  );
  const publisher = cancelBus(kafka, { topic: busTopic });
  await publisher.connect();
  const send = producer(raw, { cancelBus: publisher });
  await sleep(3_000); // the group settles: three members, two partitions each
  const latencies: number[] = [];
  for (let trial = 0; trial < CANCEL_TRIALS; trial++) {
    const id = `t${trial}`;
    const request = withCancel(background());
    await request.run(() => send.send({ topic: dataTopic, messages: [{ value: id, partition: trial % 6 }] }));
    while (!started.has(id)) await sleep(1);
    const at = performance.now();
    request.cancel('client_disconnected');
    while (!aborted.has(id)) await sleep(1);
    latencies.push((aborted.get(id) as number) - at);
  }
  latencies.sort((a, b) => a - b);
  const p = (q: number) =>
    latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] as number;
  console.log(
    `cancel → handler signal, 3 instances, ${CANCEL_TRIALS} trials: p50 ${p(0.5).toFixed(1)} ms, p99 ${p(0.99).toFixed(1)} ms, max ${p(1).toFixed(1)} ms`,
  );
  await Promise.all(instances.map(async ({ c, bus }) => Promise.all([c.disconnect(), bus.stop()])));
  await publisher.stop();
}

// The idle bus: one reader, nothing published.
{
  const busTopic = `bench.bus.${randomUUID().slice(0, 8)}`;
  const k = client('bench-idle');
  let fetches = 0;
  const make = k.consumer.bind(k);
  k.consumer = (config) => {
    const reader = make(config);
    reader.on(reader.events.FETCH, () => fetches++);
    return reader;
  };
  (globalThis as { gc?: () => void }).gc?.();
  const heapBefore = process.memoryUsage().heapUsed;
  const bus = cancelBus(k, { topic: busTopic });
  await bus.start();
  await sleep(1_000);
  const from = fetches;
  await sleep(5_000);
  (globalThis as { gc?: () => void }).gc?.();
  const heapAfter = process.memoryUsage().heapUsed;
  console.log(
    `idle bus reader: ${((fetches - from) / 5).toFixed(1)} fetch requests/s, heap +${((heapAfter - heapBefore) / 1024).toFixed(0)} kB (reader and its client, after GC)`,
  );
  await bus.stop();
}

await raw.disconnect();
await admin.disconnect();
