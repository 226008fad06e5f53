// Kafka bench, against the broker in KAFKA_BROKERS (eval "$(npm run -s infra -- env)"):
//   produce   BENCH_MESSAGES messages of 100 B in sends of BENCH_BATCH, each send under a fresh 30 s
//             context: messages/s, CPU of the producing process per message. Variants: kafkajs
//             alone; kafkajs alone sending fixed headers of the sizes ctxflow writes (what carrying
//             them costs in kafkajs, apart from ctxflow: `ctx-deadline`; with a cancel bus also
//             `ctx-request-id`); the ctxflow producer without and with a cancel bus; kafkajs with
//             OpenTelemetry's kafkajs instrumentation and a tracing SDK (a span and a traceparent
//             per message: what users run instead), in a process of its own (support/kafka-otel.ts);
//   consume   the same number, eachMessage, kafkajs alone vs the ctxflow consumer (context per
//             message, expiry check, heartbeat timer) vs kafkajs with OpenTelemetry's
//             instrumentation, timed from the first message (the group join is not counted): with a
//             no-op handler, and with one that works BENCH_WORK_US;
//   cancel    three consumer instances in one group over six partitions, each with its own cancel
//             bus reader: cancel() of the producing context → the running handler's signal,
//             BENCH_CANCEL_TRIALS trials across the partitions, p50/p99;
//   idle bus  one bus reader with nothing to read: fetch requests per second, resident memory.
// Variants are interleaved (kafkajs, ..., ctxflow, otel, kafkajs, ...), medians of BENCH_ROUNDS with
// their range; a fresh topic (three partitions) per produce run. "own CPU" is ctxflow's CPU per
// message minus kafkajs alone's. Environment: BENCH_ROUNDS (3), BENCH_MESSAGES (20000),
// BENCH_BATCH (100), BENCH_CANCEL_TRIALS (200), BENCH_WORK_US (20).
import { fork } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { Kafka, logLevel, type Message } from 'kafkajs';
import { cancelBus, consumer, producer } from '../adapters/kafka/index.ts';
import { background, withCancel, withTimeout } from '../sdk/context.ts';
import type { OtelRequest } from './support/kafka-otel.ts';
import { consume, produce, type Run, type RunSettings } from './support/kafka-runs.ts';
import { median, range } from './support/stats.ts';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const MESSAGES = Number(process.env.BENCH_MESSAGES ?? 20_000);
const BATCH = Number(process.env.BENCH_BATCH ?? 100);
const CANCEL_TRIALS = Number(process.env.BENCH_CANCEL_TRIALS ?? 200);
const WORK_US = Number(process.env.BENCH_WORK_US ?? 20);
const PARTITIONS = 3;
const brokers = (process.env.KAFKA_BROKERS ?? '').split(',').filter(Boolean);
if (brokers.length === 0) {
  console.error('KAFKA_BROKERS is not set: eval "$(npm run -s infra -- env)" first');
  process.exit(2);
}
const settings: RunSettings = { messages: MESSAGES, batch: BATCH };

const client = (id: string) => new Kafka({ clientId: id, brokers, logLevel: logLevel.NOTHING });
const kafka = client('bench');
const admin = kafka.admin();
await admin.connect();

async function topic(partitions = PARTITIONS): Promise<string> {
  const name = `bench.${randomUUID().slice(0, 8)}`;
  await admin.createTopics({ waitForLeaders: true, topics: [{ topic: name, numPartitions: partitions }] });
  return name;
}

// The OpenTelemetry variant's process, asked for one run at a time.
const otel = fork(new URL('./support/kafka-otel.ts', import.meta.url), {
  env: { ...process.env, BENCH_RUN_SETTINGS: JSON.stringify(settings) },
  stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
});
await once(otel, 'message');
async function inOtel(request: OtelRequest): Promise<Run> {
  otel.send(request);
  const [run] = (await once(otel, 'message')) as [Run];
  return run;
}

const value = 'x'.repeat(100);
const plain: Message[] = Array.from({ length: BATCH }, () => ({ value }));
// Fixed headers of the sizes the ctxflow producer writes: its deadline, and with a bus its request id.
const deadlineHeader = { 'ctx-deadline': String(Date.now() + 30_000) };
const busHeaders = { ...deadlineHeader, 'ctx-request-id': 'x'.repeat(16) };
const withHeaders = (headers: Record<string, string>) => plain.map((m) => ({ ...m, headers }));

const raw = kafka.producer();
await raw.connect();
const wrapped = producer(raw);
const bus = cancelBus(kafka, { topic: `bench.bus.${randomUUID().slice(0, 8)}` });
await bus.connect();
const wrappedWithBus = producer(raw, { cancelBus: bus });

/** One send through a ctxflow producer, under a fresh 30 s context ended (plainly) after it. */
const underContext = (send: typeof wrapped, to: string) => async (messages: Message[]) => {
  const ctx = withTimeout(background(), 30_000);
  try {
    await ctx.run(() => send.send({ topic: to, messages }));
  } finally {
    ctx.cancel();
  }
};

const PRODUCERS = [
  'kafkajs',
  'kafkajs +1 header',
  'ctxflow',
  'kafkajs +2 headers',
  'ctxflow +bus',
  'otel',
] as const;
type ProduceVariant = (typeof PRODUCERS)[number];
async function produceRun(variant: ProduceVariant, to: string): Promise<Run> {
  const direct = (messages: Message[]) => raw.send({ topic: to, messages });
  switch (variant) {
    case 'kafkajs':
      return produce(settings, direct, plain);
    case 'kafkajs +1 header':
      return produce(settings, direct, withHeaders(deadlineHeader));
    case 'kafkajs +2 headers':
      return produce(settings, direct, withHeaders(busHeaders));
    case 'ctxflow':
      return produce(settings, underContext(wrapped, to), plain);
    case 'ctxflow +bus':
      return produce(settings, underContext(wrappedWithBus, to), plain);
    case 'otel':
      return inOtel({ op: 'produce', topic: to, headers: undefined });
  }
}

const CONSUMERS = ['kafkajs', 'ctxflow', 'otel'] as const;
type ConsumeVariant = (typeof CONSUMERS)[number];
function consumeRun(variant: ConsumeVariant, from: string, workUs: number): Promise<Run> {
  if (variant === 'otel') return inOtel({ op: 'consume', topic: from, workUs });
  if (variant === 'kafkajs') return consume(settings, kafka, from, workUs);
  return consume(settings, kafka, from, workUs, (inner) => consumer(inner, { deadLetterProducer: raw }));
}

const producing = Object.fromEntries(PRODUCERS.map((v) => [v, [] as Run[]])) as Record<ProduceVariant, Run[]>;
const consuming = Object.fromEntries(CONSUMERS.map((v) => [v, [] as Run[]])) as Record<ConsumeVariant, Run[]>;
const consumingWithWork = Object.fromEntries(CONSUMERS.map((v) => [v, [] as Run[]])) as Record<
  ConsumeVariant,
  Run[]
>;
// One warm-up of each producer path, not counted.
for (const variant of PRODUCERS) await produceRun(variant, await topic());
for (let round = 0; round < ROUNDS; round++) {
  for (const variant of PRODUCERS) producing[variant].push(await produceRun(variant, await topic()));
}
// Consumers read messages written by the ctxflow producer with a cancel bus (its headers to parse
// for every variant).
const filled = await topic();
await produce(settings, underContext(wrappedWithBus, filled), plain);
for (let round = 0; round < ROUNDS; round++) {
  for (const variant of CONSUMERS) {
    consuming[variant].push(await consumeRun(variant, filled, 0));
    consumingWithWork[variant].push(await consumeRun(variant, filled, WORK_US));
  }
}

function summary(label: string, runs: Run[]): { rate: number; cpu: number; line: string } {
  const rates = runs.map((r) => r.perSecond);
  const cpus = runs.map((r) => r.cpuUsPerMessage);
  const rate = median(rates);
  const cpu = median(cpus);
  return {
    rate,
    cpu,
    line: `${label.padEnd(34)} ${Math.round(rate).toString().padStart(7)} msg/s (${range(rates, 0)}), CPU ${cpu.toFixed(1)} us/msg (${range(cpus, 1)})`,
  };
}
const ratio = (label: string, ours: { rate: number }, base: { rate: number }) =>
  console.log(`  ratio ${label}: ${(ours.rate / base.rate).toFixed(3)}`);

console.log(
  `kafkajs 2.2.4, ${MESSAGES} messages of ${value.length} B, ${PARTITIONS} partitions, ${ROUNDS} rounds, one broker`,
);
const p = Object.fromEntries(
  PRODUCERS.map((v) => [v, summary(`produce ${v === 'otel' ? 'kafkajs + OpenTelemetry' : v}`, producing[v])]),
) as Record<ProduceVariant, ReturnType<typeof summary>>;
for (const variant of PRODUCERS) console.log(p[variant].line);
ratio('kafkajs +1 header / kafkajs', p['kafkajs +1 header'], p.kafkajs);
ratio('ctxflow / kafkajs', p.ctxflow, p.kafkajs);
ratio('ctxflow / kafkajs +1 header (same headers)', p.ctxflow, p['kafkajs +1 header']);
ratio('ctxflow +bus / kafkajs +2 headers (same headers)', p['ctxflow +bus'], p['kafkajs +2 headers']);
ratio('ctxflow / kafkajs + OpenTelemetry', p.ctxflow, p.otel);
for (const [name, runs] of [
  ['consume', consuming],
  [`consume, ${WORK_US} us handler`, consumingWithWork],
] as const) {
  const bare = summary(`${name} kafkajs`, runs.kafkajs);
  const ours = summary(`${name} ctxflow`, runs.ctxflow);
  const instrumented = summary(`${name} kafkajs + OpenTelemetry`, runs.otel);
  console.log(bare.line);
  console.log(ours.line);
  console.log(instrumented.line);
  console.log(`  ctxflow's own CPU: ${(ours.cpu - bare.cpu).toFixed(1)} us/msg`);
  ratio('ctxflow / kafkajs', ours, bare);
  ratio('ctxflow / kafkajs + OpenTelemetry', ours, instrumented);
}
otel.send({ op: 'stop' } satisfies OtelRequest);
await once(otel, 'exit');

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

await bus.stop();
await raw.disconnect();
await admin.disconnect();
