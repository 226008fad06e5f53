// gRPC bench: unary calls, four layers in the same run:
//   bare     grpc-js alone
//   otel     + OpenTelemetry (NodeSDK with instrumentation-grpc, preloaded; spans batched then dropped)
//   ctxflow  + ctxflow (clientOptions() on the client; wrapService() on the server; each call
//            under a fresh 5 s context)
//   alone    ctxflow as above without OpenTelemetry's SDK
// and, when BENCH_VARIANTS names them, deadline: OTel + a 5 s `deadline` call option set by hand;
// intercepted: alone with serverInterceptor() in front of wrapService() on the server; headers:
// bare sending by hand what ctxflow sends under a trace (a deadline option, a fresh traceparent);
// context: headers with each call in an OpenTelemetry context of its own on both sides.
// Each variant has a server process and a load-generator process (a closed loop of
// BENCH_CONCURRENCY calls, each from ROOT_CONTEXT). With taskset and 2+ cores the load generators
// (and this process) run on core 0 and the servers on core 1. Variants are interleaved (bare, otel,
// ctxflow, bare, ...); medians of BENCH_ROUNDS runs of BENCH_SECONDS after a warm-up, with their
// range. Server CPU per request comes from /proc/PID/stat over the measured window. Then the
// cancellation latency, client cancel → server handler notified, over BENCH_CANCEL_TRIALS calls.
// Environment: BENCH_ROUNDS (3), BENCH_SECONDS (5), BENCH_WARMUP (1.5), BENCH_CONCURRENCY (32),
// BENCH_CANCEL_TRIALS (1000), BENCH_VARIANTS (comma-separated; default bare,otel,ctxflow,alone).
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import { ALL_VARIANTS, TRACED, type Variant, WITH_CTXFLOW } from './grpc/service.ts';
import { median, range } from './support/stats.ts';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const WARMUP = Number(process.env.BENCH_WARMUP ?? 1.5);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 32);
const CANCEL_TRIALS = Number(process.env.BENCH_CANCEL_TRIALS ?? 1000);
const VARIANTS = ALL_VARIANTS.filter((variant) =>
  (process.env.BENCH_VARIANTS ?? 'bare,otel,ctxflow,alone').split(',').includes(variant),
);
const LABELS: Record<Variant, string> = {
  bare: 'grpc-js',
  otel: 'grpc-js + OTel',
  deadline: 'grpc-js + OTel + deadline',
  ctxflow: 'grpc-js + OTel + ctxflow',
  alone: 'grpc-js + ctxflow',
  intercepted: 'grpc-js + ctxflow, interceptor',
  headers: 'grpc-js + headers by hand',
  context: 'grpc-js + headers + a context',
};

const node = process.execPath;
const here = (path: string) => fileURLToPath(new URL(path, import.meta.url));
const CORES = availableParallelism();
const pinned = CORES >= 2 && spawnSync('taskset', ['-V']).status === 0;
if (pinned) spawnSync('taskset', ['-a', '-cp', '0', String(process.pid)], { stdio: 'ignore' });
const grpcVersion = JSON.parse(
  readFileSync(here('../node_modules/@grpc/grpc-js/package.json'), 'utf8'),
).version;

type Message = { type: string; [key: string]: unknown };

/** A child process spoken to over IPC: `ask` sends a message and waits for the reply of a type. */
class Child {
  readonly process: ChildProcess;
  readonly #listeners = new Set<(message: Message) => void>();

  constructor(script: string, variant: Variant, role: 'server' | 'load', core: number) {
    const args = [
      '--conditions=ctxflow-source',
      ...(TRACED.includes(variant) ? ['--import', here('./grpc/otel.ts')] : []),
      here(script),
    ];
    const [command, argv] = pinned ? ['taskset', ['-c', String(core), node, ...args]] : [node, args];
    this.process = spawn(command as string, argv as string[], {
      env: {
        ...process.env,
        BENCH_VARIANT: variant,
        BENCH_ROLE: role,
        BENCH_CONCURRENCY: String(CONCURRENCY),
        NODE_ENV: 'production',
      },
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    this.process.on('message', (message: Message) => {
      for (const listener of this.#listeners) listener(message);
    });
  }

  on(listener: (message: Message) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  next(type: string): Promise<Message> {
    return new Promise((resolve, reject) => {
      const exited = (code: number | null) =>
        reject(new Error(`child exited with ${code} while waiting for ${type}`));
      this.process.once('exit', exited);
      const off = this.on((message) => {
        if (message.type === 'error') reject(new Error(String(message.message)));
        else if (message.type !== type) return;
        else resolve(message);
        off();
        this.process.off('exit', exited);
      });
    });
  }

  ask(message: Message, reply: string): Promise<Message> {
    const answer = this.next(reply);
    this.process.send(message);
    return answer;
  }

  stop(): void {
    if (this.process.connected) this.process.disconnect();
    setTimeout(() => this.process.kill('SIGKILL'), 2000).unref();
  }
}

interface Run {
  rps: number;
  p50: number;
  p99: number;
  serverCpuUsPerRequest: number;
  clientCpuUsPerRequest: number;
  /** CPU used by everything else on the machine during the run, in cores. */
  foreignCores: number;
  errors: number;
}

interface Pair {
  server: Child;
  load: Child;
}

async function start(variant: Variant): Promise<Pair> {
  const server = new Child('./grpc/server.ts', variant, 'server', 1);
  const { port } = await server.next('listening');
  const load = new Child('./grpc/load.ts', variant, 'load', 0);
  await load.ask({ type: 'connect', port }, 'connected');
  return { server, load };
}

function quantile(sorted: Float64Array, q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] as number;
}

/** Client cancel → server handler notified, in ms, for `trials` sequential calls. */
async function cancelLatency(pair: Pair): Promise<{ p50: number; p99: number; max: number; trials: number }> {
  const notified = new Map<string, bigint>();
  const off = pair.server.on((message) => {
    if (message.type === 'cancelled') notified.set(String(message.id), BigInt(String(message.at)));
  });
  const { issued } = (await pair.load.ask(
    { type: 'cancel', trials: CANCEL_TRIALS },
    'issued',
  )) as unknown as {
    issued: Record<string, string>;
  };
  const deadline = Date.now() + 5000;
  while (notified.size < Object.keys(issued).length && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  off();
  const latencies: number[] = [];
  for (const [id, at] of Object.entries(issued)) {
    const seen = notified.get(id);
    if (seen !== undefined) latencies.push(Number(seen - BigInt(at)) / 1e6);
  }
  if (latencies.length < Object.keys(issued).length) {
    throw new Error(
      `only ${latencies.length} of ${Object.keys(issued).length} cancellations reached the handler`,
    );
  }
  const sorted = Float64Array.from(latencies).sort();
  return {
    p50: quantile(sorted, 0.5),
    p99: quantile(sorted, 0.99),
    max: sorted.at(-1) as number,
    trials: sorted.length,
  };
}

const pairs = new Map<Variant, Pair>();
const began = Date.now();
try {
  for (const variant of VARIANTS) pairs.set(variant, await start(variant));
  const header =
    `node ${process.version}, @grpc/grpc-js ${grpcVersion}, ${CORES} cores, ` +
    `${pinned ? 'load generators on core 0, servers on core 1 (taskset)' : 'not pinned'}, ` +
    `${CONCURRENCY} concurrent unary calls, ${ROUNDS} rounds of ${SECONDS} s after ${WARMUP} s warm-up each`;
  process.stderr.write(`${header}\n`);
  const runs = new Map<Variant, Run[]>(VARIANTS.map((v) => [v, []]));
  for (let round = 1; round <= ROUNDS; round++) {
    process.stderr.write(`round ${round}\n`);
    for (const variant of VARIANTS) {
      const { server, load } = pairs.get(variant) as Pair;
      const { result } = (await load.ask(
        { type: 'run', seconds: SECONDS, warmup: WARMUP, serverPid: server.process.pid as number },
        'result',
      )) as unknown as { result: Run };
      runs.get(variant)?.push(result);
      process.stderr.write(
        `  ${LABELS[variant].padEnd(26)} ${result.rps.toFixed(0).padStart(6)} calls/s  p50 ${result.p50.toFixed(3)} ms  ` +
          `p99 ${result.p99.toFixed(3)} ms  server ${result.serverCpuUsPerRequest.toFixed(1)} us CPU/call  ` +
          `client ${result.clientCpuUsPerRequest.toFixed(1)} us CPU/call  other load ${result.foreignCores.toFixed(2)} cores  ` +
          `errors ${result.errors}\n`,
      );
    }
  }
  const spans: string[] = [];
  for (const variant of VARIANTS.filter((v) => TRACED.includes(v))) {
    const { server, load } = pairs.get(variant) as Pair;
    const counts = [
      (await server.ask({ type: 'spans' }, 'spans')).spans,
      (await load.ask({ type: 'spans' }, 'spans')).spans,
    ];
    if (counts.some((count) => count === 0)) {
      throw new Error(
        `${variant}: no spans exported (server ${counts[0]}, client ${counts[1]}): instrumentation not live`,
      );
    }
    spans.push(`${variant}: ${counts[0]} server / ${counts[1]} client spans exported (dropped)`);
  }

  const rows: string[] = [header, ''];
  rows.push(
    '| variant | calls/s median (range) | p50 ms | p99 ms | server CPU µs/call | client CPU µs/call | other load, cores | errors |',
  );
  rows.push('| --- | --- | --- | --- | --- | --- | --- | --- |');
  const medians = new Map<Variant, Run>();
  for (const variant of VARIANTS) {
    const list = runs.get(variant) as Run[];
    const pick = (key: keyof Run) => list.map((run) => run[key]);
    const m: Run = {
      rps: median(pick('rps')),
      p50: median(pick('p50')),
      p99: median(pick('p99')),
      serverCpuUsPerRequest: median(pick('serverCpuUsPerRequest')),
      clientCpuUsPerRequest: median(pick('clientCpuUsPerRequest')),
      foreignCores: median(pick('foreignCores')),
      errors: pick('errors').reduce((x, y) => x + y, 0),
    };
    medians.set(variant, m);
    rows.push(
      `| ${LABELS[variant]} | ${m.rps.toFixed(0)} (${range(pick('rps'), 0)}) | ${m.p50.toFixed(3)} (${range(pick('p50'), 3)}) ` +
        `| ${m.p99.toFixed(3)} (${range(pick('p99'), 3)}) | ${m.serverCpuUsPerRequest.toFixed(1)} (${range(pick('serverCpuUsPerRequest'), 1)}) ` +
        `| ${m.clientCpuUsPerRequest.toFixed(1)} (${range(pick('clientCpuUsPerRequest'), 1)}) ` +
        `| ${m.foreignCores.toFixed(2)} (${range(pick('foreignCores'), 2)}) | ${m.errors} |`,
    );
  }
  const ratio = (x: number, y: number) => (x / y).toFixed(2);
  const compare = (name: Variant, base: Variant) => {
    const x = medians.get(name);
    const y = medians.get(base);
    if (x === undefined || y === undefined) return;
    const perRep = (runs.get(name) as Run[]).map((run, i) =>
      ratio(run.rps, (runs.get(base) as Run[])[i]?.rps ?? NaN),
    );
    rows.push(
      `${name}/${base}: calls/s ${ratio(x.rps, y.rps)} (per round ${perRep.join(' ')}), p50 ${ratio(x.p50, y.p50)}, ` +
        `server CPU/call ${ratio(x.serverCpuUsPerRequest, y.serverCpuUsPerRequest)} ` +
        `(${(x.serverCpuUsPerRequest - y.serverCpuUsPerRequest).toFixed(1)} µs), client CPU/call ` +
        `${ratio(x.clientCpuUsPerRequest, y.clientCpuUsPerRequest)} (${(x.clientCpuUsPerRequest - y.clientCpuUsPerRequest).toFixed(1)} µs)`,
    );
  };
  rows.push('');
  compare('otel', 'bare');
  compare('ctxflow', 'otel');
  compare('alone', 'bare');
  compare('intercepted', 'bare');
  compare('alone', 'intercepted');
  compare('deadline', 'otel');
  compare('ctxflow', 'deadline');
  compare('headers', 'bare');
  compare('alone', 'headers');
  compare('context', 'headers');
  compare('alone', 'context');
  const alone = medians.get('alone');
  const bare = medians.get('bare');
  const withOtel = medians.get('ctxflow');
  const otelAlone = medians.get('otel');
  if (alone !== undefined && bare !== undefined && withOtel !== undefined && otelAlone !== undefined) {
    const check = (value: number, target: number, atLeast: boolean) =>
      `${value.toFixed(2)} (target ${atLeast ? '>=' : '<='} ${target.toFixed(2)}: ${
        (atLeast ? value >= target : value <= target) ? 'met' : 'missed'
      })`;
    rows.push(
      `targets: alone/bare calls/s ${check(alone.rps / bare.rps, 0.9, true)}; ctxflow/otel calls/s ` +
        `${check(withOtel.rps / otelAlone.rps, 0.93, true)}, p50 ${check(withOtel.p50 / otelAlone.p50, 1.05, false)}`,
    );
  }
  rows.push(spans.join('; '));

  rows.push('');
  rows.push(
    `cancellation latency, client cancel → server handler notified (${CANCEL_TRIALS} sequential calls):`,
  );
  for (const variant of VARIANTS.filter((v) => v !== 'deadline' && v !== 'headers' && v !== 'context')) {
    const r = await cancelLatency(pairs.get(variant) as Pair);
    const how = WITH_CTXFLOW.includes(variant)
      ? 'ctx.cancel() → current().signal abort'
      : "call.cancel() → call 'cancelled' event";
    rows.push(
      `  ${LABELS[variant].padEnd(26)} ${how.padEnd(40)} p50 ${r.p50.toFixed(3)} ms  p99 ${r.p99.toFixed(3)} ms  ` +
        `max ${r.max.toFixed(3)} ms  (${r.trials} trials)`,
    );
  }
  rows.push(`whole run: ${((Date.now() - began) / 1000).toFixed(0)} s`);
  console.log(rows.join('\n'));
} finally {
  for (const { server, load } of pairs.values()) {
    load.stop();
    server.stop();
  }
}
