/**
 * `npm run demo`: five services, each its own process set up with one init() call — gateway
 * (public express edge) → orders (express) → inventory (gRPC), and orders → Kafka → fulfillment
 * (worker) → shipping (node:http) — and four requests through them: the budget shrinking hop by
 * hop, a slow dependency running out of time, a client giving up, and a message that waited in the
 * queue past its deadline. For each, the trace is read back from Jaeger and printed as a per-hop
 * table and a waterfall. Kafka and Jaeger are started (and stopped) unless KAFKA_BROKERS and
 * JAEGER_URL are set; `npm run demo -- --keep` leaves everything running.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { Kafka, logLevel } from 'kafkajs';
import { fetchTrace, hopsOf, type JaegerTrace, renderHops, renderWaterfall } from '../cli/trace.ts';
import { anyFreePort, down, type Service, up } from '../scripts/infra/index.ts';

const KEEP = process.argv.includes('--keep');
const HERE = import.meta.dirname;
const color = process.stdout.isTTY === true && process.env.NO_COLOR === undefined;

interface LogLine {
  service: string;
  event: string;
  traceId?: string;
  port?: number;
  method?: string;
}

/** A started example service: its process and the log lines it printed. */
class Running {
  readonly lines: LogLine[] = [];
  readonly #waiters: { match: (l: LogLine) => boolean; resolve: (l: LogLine) => void }[] = [];
  readonly child: ChildProcess;
  readonly name: string;

  constructor(name: string, env: Record<string, string>) {
    this.name = name;
    const flags = ['--conditions=ctxflow-source', '--disable-warning=TimeoutNegativeWarning'];
    this.child = spawn(process.execPath, [...flags, path.join(HERE, name, 'main.ts')], {
      env: { ...process.env, ...env, OTEL_SERVICE_NAME: name },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    createInterface({ input: this.child.stdout as NodeJS.ReadableStream }).on('line', (text) => {
      let line: LogLine;
      try {
        line = JSON.parse(text) as LogLine;
      } catch {
        return;
      }
      this.lines.push(line);
      for (const waiter of [...this.#waiters]) {
        if (waiter.match(line)) {
          this.#waiters.splice(this.#waiters.indexOf(waiter), 1);
          waiter.resolve(line);
        }
      }
    });
    this.child.stderr?.on('data', (chunk: Buffer) => {
      if (process.env.DEMO_VERBOSE) process.stderr.write(`[${name}] ${chunk}`);
    });
  }

  /** The first log line (already printed or to come) that `match` accepts. */
  next(match: (line: LogLine) => boolean, timeoutMs = 60_000): Promise<LogLine> {
    const seen = this.lines.find(match);
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`${this.name}: no such log line in ${timeoutMs} ms`)),
        timeoutMs,
      );
      this.#waiters.push({
        match,
        resolve: (line) => {
          clearTimeout(timer);
          resolve(line);
        },
      });
    });
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise((resolve) => this.child.once('exit', resolve));
    this.child.kill('SIGTERM');
    const killer = setTimeout(() => this.child.kill('SIGKILL'), 5_000);
    await exited;
    clearTimeout(killer);
  }
}

const services = new Map<string, Running>();
let startedInfra: Service[] = [];

async function cleanUp(): Promise<void> {
  await Promise.all([...services.values()].map((s) => s.stop()));
  if (startedInfra.length > 0) await down(startedInfra);
}

process.once('SIGINT', () => {
  console.log('\nstopping everything the demo started…');
  cleanUp().finally(() => process.exit(130));
});

/** Kafka and Jaeger: those named by the environment, else started here (and stopped at the end). */
async function infrastructure(): Promise<{ brokers: string; jaeger: string; otlp: string }> {
  if (process.env.KAFKA_BROKERS && process.env.JAEGER_URL && process.env.OTEL_EXPORTER_OTLP_ENDPOINT) {
    return {
      brokers: process.env.KAFKA_BROKERS,
      jaeger: process.env.JAEGER_URL,
      otlp: process.env.OTEL_EXPORTER_OTLP_ENDPOINT,
    };
  }
  const started = Date.now();
  const ticker = setInterval(() => {
    const s = Math.round((Date.now() - started) / 1000);
    console.log(
      `  still starting Kafka and Jaeger: ${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s (the first run builds Jaeger from source: 3 to 6 minutes)`,
    );
  }, 15_000);
  try {
    console.log('starting Kafka and Jaeger on 127.0.0.1 (cached in ~/.cache/ctxflow)…');
    const infra = await up(['kafka', 'jaeger']);
    startedInfra = infra.started;
    const { KAFKA_BROKERS, JAEGER_URL, OTEL_EXPORTER_OTLP_ENDPOINT } = infra.env as Record<string, string>;
    return {
      brokers: KAFKA_BROKERS as string,
      jaeger: JAEGER_URL as string,
      otlp: OTEL_EXPORTER_OTLP_ENDPOINT as string,
    };
  } finally {
    clearInterval(ticker);
  }
}

const infra = await infrastructure();
const common = {
  KAFKA_BROKERS: infra.brokers,
  OTEL_EXPORTER_OTLP_ENDPOINT: infra.otlp,
  OTEL_BSP_SCHEDULE_DELAY: '200',
};
{
  const admin = new Kafka({ brokers: infra.brokers.split(','), logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  await admin.createTopics({
    topics: [{ topic: 'orders' }, { topic: 'orders.dead-letter' }],
    waitForLeaders: true,
  });
  await admin.disconnect();
}

/** Where each service serves its metrics (`OTEL_METRICS_EXPORTER=prometheus`: no code in the service). */
const metricsPorts = new Map<string, number>();

async function start(name: string, env: Record<string, string> = {}): Promise<number> {
  const metricsPort = metricsPorts.get(name) ?? (await anyFreePort());
  metricsPorts.set(name, metricsPort);
  const metrics = {
    OTEL_METRICS_EXPORTER: 'prometheus',
    OTEL_EXPORTER_PROMETHEUS_HOST: '127.0.0.1',
    OTEL_EXPORTER_PROMETHEUS_PORT: String(metricsPort),
  };
  const service = new Running(name, { ...common, ...metrics, ...env });
  services.set(name, service);
  const exited = new Promise<never>((_, reject) =>
    service.child.once('exit', (code) =>
      reject(new Error(`${name} exited (${code}) before it was ready; DEMO_VERBOSE=1 shows its errors`)),
    ),
  );
  const line = await Promise.race([service.next((l) => l.event === 'listening'), exited]);
  return line.port ?? 0;
}

console.log('starting gateway, orders, inventory, fulfillment and shipping, each with init()…');
const shipping = await start('shipping');
const inventory = await start('inventory');
const orders = await start('orders', { INVENTORY_ADDR: `127.0.0.1:${inventory}` });
const gateway = await start('gateway', { ORDERS_URL: `http://127.0.0.1:${orders}` });
await start('fulfillment', { SHIPPING_URL: `http://127.0.0.1:${shipping}` });
const hasUi = await fetch(infra.jaeger).then(
  async (r) => (await r.text()).includes('<title>Jaeger UI</title>'),
  () => false,
);

/**
 * Waits until Jaeger holds the trace's hops from `expected` services, a service named twice for two
 * hops (spans are exported in batches).
 */
async function traceOf(traceId: string, expected: string[]): Promise<JaegerTrace> {
  const wanted = (list: string[], service: string) => list.filter((s) => s === service).length;
  let last: JaegerTrace | undefined;
  for (let i = 0; i < 100; i++) {
    last = await fetchTrace(infra.jaeger, traceId).catch(() => undefined);
    const services = last ? hopsOf(last).map((h) => h.service) : [];
    if (last && expected.every((s) => wanted(services, s) >= wanted(expected, s))) {
      await sleep(500); // spans still on their way (the client side of each hop)
      return await fetchTrace(infra.jaeger, traceId);
    }
    await sleep(200);
  }
  if (last) return last;
  throw new Error(`trace ${traceId} not found in Jaeger`);
}

/** Sends one request to the gateway under a new trace; `giveUpWhen` aborts it once that log line appears. */
async function scenario(title: string, query: string, giveUpWhen?: (traceId: string) => Promise<unknown>) {
  console.log(`\n${title}`);
  const traceId = randomBytes(16).toString('hex');
  const client = new AbortController();
  const started = Date.now();
  giveUpWhen?.(traceId).then(
    () => client.abort(),
    () => {},
  );
  try {
    const answer = await fetch(`http://127.0.0.1:${gateway}/checkout?${query}`, {
      headers: { traceparent: `00-${traceId}-${randomBytes(8).toString('hex')}-01` },
      signal: client.signal,
    });
    const reason = answer.headers.get('ctx-cancel-reason');
    console.log(
      `  client: ${answer.status}${reason ? ` with ctx-cancel-reason: ${reason}` : ''} after ${Date.now() - started} ms`,
    );
    await answer.text();
  } catch {
    console.log(`  client: gave up after ${Date.now() - started} ms`);
  }
  return traceId;
}

async function report(traceId: string, expected: string[]): Promise<void> {
  const trace = await traceOf(traceId, expected);
  for (const line of renderHops(hopsOf(trace))) console.log(`  ${line}`);
  console.log('');
  for (const line of renderWaterfall(trace, { color, barWidth: 32 })) console.log(`  ${line}`);
  if (hasUi) console.log(`  ${infra.jaeger}/trace/${traceId}`);
}

/**
 * A few of the services' own metrics, scraped from their Prometheus endpoints: where contexts
 * ended and why, and what was dead-lettered or shed (fulfillment's count since its restart).
 */
async function printMetrics(): Promise<void> {
  console.log('\nwhat the services count (ctxflow.context.ended and friends, from their /metrics):');
  for (const [name, port] of metricsPorts) {
    const text = await fetch(`http://127.0.0.1:${port}/metrics`).then(
      (r) => r.text(),
      () => '',
    );
    const counts = text
      .split('\n')
      .filter((line) => /^ctxflow_(context_ended|request_shed|kafka_messages)[a-z_]*_total\{/.test(line))
      .map((line) => {
        const labels = Object.fromEntries([...line.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
        const what = line.startsWith('ctxflow_context_ended')
          ? `ended ${labels.ctxflow_cause} (${labels.ctxflow_cause_source})`
          : line.startsWith('ctxflow_request_shed')
            ? 'shed'
            : `${labels.ctxflow_kafka_outcome} ${labels.ctxflow_cause}`;
        return `${what}: ${line.slice(line.lastIndexOf(' ') + 1)}`;
      });
    console.log(`  ${name.padEnd(12)} ${counts.length > 0 ? counts.join(', ') : '-'}`);
  }
}

const arrivedAt = (service: string) => (traceId: string) =>
  (services.get(service) as Running).next((l) => l.event === 'arrived' && l.traceId === traceId, 20_000);

try {
  console.log('\ngateway gives every request 800 ms; each hop gets what is left');
  const quick = await scenario(
    '1. a quick order: the budget shrinks hop by hop, through the queue too',
    'sku=a1',
  );
  await arrivedAt('shipping')(quick);
  await report(quick, ['gateway', 'orders', 'inventory', 'fulfillment', 'shipping']);

  const slow = await scenario(
    '2. inventory is slow: it runs out of time, and every hop in front of it stops',
    'sku=b2&mode=slow-inventory',
  );
  await report(slow, ['gateway', 'orders', 'inventory']);

  // The client gives up once shipping works and orders' second inventory call (confirm) runs.
  const confirming = (traceId: string) =>
    (services.get('inventory') as Running).next(
      (l) => l.event === 'arrived' && l.traceId === traceId && l.method === 'slow-shipping',
      20_000,
    );
  const gone = await scenario(
    '3. the client gives up while shipping works: the cancel reaches every hop, the Kafka worker included',
    'sku=c3&mode=slow-shipping',
    (traceId) => Promise.all([arrivedAt('shipping')(traceId), confirming(traceId)]),
  );
  await report(gone, ['gateway', 'orders', 'inventory', 'inventory', 'fulfillment', 'shipping']);

  console.log(
    '\n4. the worker is down while an order waits in the queue past its deadline: dead-lettered with its cause',
  );
  await (services.get('fulfillment') as Running).stop();
  const queued = await scenario('  (fulfillment stopped; the order is queued)', 'sku=d4');
  await sleep(1_000); // longer than the gateway's 800 ms budget
  console.log('  fulfillment restarted');
  await start('fulfillment', { SHIPPING_URL: `http://127.0.0.1:${shipping}` });
  await report(queued, ['gateway', 'orders', 'fulfillment']);

  await printMetrics();
  console.log(`\nany trace again: npx ctxflow trace <trace id> --jaeger ${infra.jaeger}`);
  if (KEEP) {
    console.log(
      `\n--keep: the services and the infrastructure stay up (gateway http://127.0.0.1:${gateway}/checkout); Ctrl-C stops them`,
    );
    await new Promise(() => {});
  }
} finally {
  if (!KEEP) await cleanUp();
}
