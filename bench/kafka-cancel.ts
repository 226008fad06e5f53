// Cancel latency with every service under init() only, against the broker in KAFKA_BROKERS
// (eval "$(npm run -s infra -- env)"): an unchanged node:http service (this process) publishes one
// message per request with a plain kafkajs producer; an unchanged kafkajs consumer in a second
// process handles it, waiting on current().signal. The client goes away once the handler runs;
// measured: from the client's destroy() to the handler's abort (wall clock of both processes),
// and the abort's cause. BENCH_CANCEL_TRIALS (100) trials, after 5 not counted; p50, p99, max.
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { createInterface } from 'node:readline';
import { init } from '../init/index.ts';

const brokers = (process.env.KAFKA_BROKERS ?? '').split(',').filter(Boolean);
if (brokers.length === 0) {
  console.error('KAFKA_BROKERS is not set: eval "$(npm run -s infra -- env)" first');
  process.exit(2);
}
const [role, topic = '', busTopic = ''] = process.argv.slice(2);
const now = () => performance.timeOrigin + performance.now();

if (role === 'worker') {
  init({ tracing: false, kafka: { cancelBus: { topic: busTopic } } });
  const { Kafka, logLevel } = await import('kafkajs');
  const { current } = await import('../sdk/index.ts');
  const kafka = new Kafka({ clientId: 'bench-worker', brokers, logLevel: logLevel.NOTHING });
  const consumer = kafka.consumer({ groupId: `bench-${randomUUID()}`, maxWaitTimeInMs: 100 });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  await consumer.run({
    eachMessage: async ({ message }) => {
      const ctx = current();
      const id = String(message.value);
      process.stdout.write(`${JSON.stringify({ type: 'start', id })}\n`);
      await new Promise<void>((resolve) => ctx.signal.addEventListener('abort', () => resolve()));
      process.stdout.write(`${JSON.stringify({ type: 'abort', id, at: now(), cause: ctx.cause?.code })}\n`);
    },
  });
  process.stdout.write(`${JSON.stringify({ type: 'ready' })}\n`);
  process.on('SIGTERM', () => void consumer.disconnect().finally(() => process.exit(0)));
} else {
  const TRIALS = Number(process.env.BENCH_CANCEL_TRIALS ?? 100);
  const WARMUP = 5;
  const dataTopic = `bench.cancel.${randomUUID().slice(0, 8)}`;
  const bus = `bench.cancel.bus.${randomUUID().slice(0, 8)}`;
  init({ tracing: false, kafka: { cancelBus: { topic: bus } } });
  const { Kafka, logLevel } = await import('kafkajs');
  const { current } = await import('../sdk/index.ts');
  const kafka = new Kafka({ clientId: 'bench-service', brokers, logLevel: logLevel.NOTHING });
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({ waitForLeaders: true, topics: [{ topic: dataTopic }, { topic: bus }] });
  await admin.disconnect();
  const producer = kafka.producer();
  await producer.connect();
  const server = http.createServer(async (req, res) => {
    await producer.send({ topic: dataTopic, messages: [{ value: String(req.headers['x-id']) }] });
    res.writeHead(200).flushHeaders();
    current().signal.addEventListener('abort', () => res.end());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;

  const events = new Map<string, { resolve: (event: { at: number; cause: string }) => void }>();
  const started = new Map<string, () => void>();
  let ready: () => void = () => {};
  const isReady = new Promise<void>((resolve) => {
    ready = resolve;
  });
  const args = ['--disable-warning=TimeoutNegativeWarning', import.meta.filename, 'worker', dataTopic, bus];
  const worker = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  createInterface({ input: worker.stdout }).on('line', (line) => {
    const event = JSON.parse(line) as { type: string; id: string; at: number; cause: string };
    if (event.type === 'ready') ready();
    if (event.type === 'start') started.get(event.id)?.();
    if (event.type === 'abort') events.get(event.id)?.resolve(event);
  });
  await isReady;

  const latencies: number[] = [];
  const causes = new Map<string, number>();
  for (let trial = 0; trial < TRIALS + WARMUP; trial++) {
    const id = `t${trial}`;
    const running = new Promise<void>((resolve) => started.set(id, resolve));
    const aborted = new Promise<{ at: number; cause: string }>((resolve) => events.set(id, { resolve }));
    const request = http.request({ port, method: 'POST', headers: { 'x-id': id } });
    request.on('error', () => {});
    request.end();
    await running;
    const at = now();
    request.destroy();
    const abort = await aborted;
    if (trial < WARMUP) continue;
    latencies.push(abort.at - at);
    causes.set(abort.cause, (causes.get(abort.cause) ?? 0) + 1);
  }
  latencies.sort((a, b) => a - b);
  const p = (q: number) =>
    latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] as number;
  console.log(
    `init() only, HTTP → Kafka → consumer (another process), client gone → handler aborted, ${TRIALS} trials: p50 ${p(0.5).toFixed(1)} ms, p99 ${p(0.99).toFixed(1)} ms, max ${p(1).toFixed(1)} ms; causes ${JSON.stringify(Object.fromEntries(causes))}`,
  );
  worker.kill('SIGTERM');
  server.close();
  await producer.disconnect();
}
