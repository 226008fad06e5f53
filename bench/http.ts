// HTTP bench: client -> A -> B (express, fetch between them), four layers in the same run:
//   a  bare express + global fetch
//   b  + OpenTelemetry http/express/undici instrumentation (NodeSDK, spans batched then dropped)
//   c  + ctxflow (deadlines() and errorHandler(), ctxflow fetch, DeadlinePropagator composed with W3C)
//   d  ctxflow as in c without OpenTelemetry's SDK
// and, when BENCH_VARIANTS names them, e: a with A sending by hand what d sends (ctx-timeout and a
// fresh traceparent on each fetch); f: e with each request run in an OpenTelemetry context of its
// own (AsyncLocalStorage), the least any context propagation costs; g: d with A's fetch by hand as
// in e (ctxflow's middleware on both hops, the global fetch).
// A and B run as child processes; autocannon runs here. With taskset and 2+ cores this process is
// pinned to core 0 and the servers to core 1. Variants are interleaved (a, b, c, a, b, c, ...);
// medians and spread are reported, then the cancellation latency over three hops.
// Environment: BENCH_ROUNDS (default 5), BENCH_SECONDS (default 5), BENCH_CONNECTIONS (default 10),
// BENCH_VARIANTS (comma-separated; default a,b,c,d).
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { type ChainRun, chainMedians, chainTableHeader, measureChain } from './support/chain.ts';
import { type BenchServer, CORES, pinned, spanCount, startServer } from './support/servers.ts';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const WARMUP_SECONDS = 1.5;
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 10);
const ALL_VARIANTS = ['a', 'b', 'c', 'd', 'e', 'f', 'g'] as const;
type Variant = (typeof ALL_VARIANTS)[number];
const VARIANTS = ALL_VARIANTS.filter((variant) =>
  (process.env.BENCH_VARIANTS ?? 'a,b,c,d').split(',').includes(variant),
);
const LABELS: Record<Variant, string> = {
  a: 'a bare',
  b: 'b OTel',
  c: 'c OTel+ctxflow',
  d: 'd ctxflow alone',
  e: 'e headers by hand',
  f: 'f e + a context',
  g: 'g d, fetch by hand',
};

const node = process.execPath;
const here = (path: string) => fileURLToPath(new URL(path, import.meta.url));

type Server = BenchServer;

function startVariantServer(variant: Variant, role: 'A' | 'B', next?: string): Promise<Server> {
  const args = [
    '--conditions=ctxflow-source',
    ...(variant === 'b' || variant === 'c' ? ['--import', here('./http/otel.ts')] : []),
    here('./http/server.ts'),
  ];
  return startServer(
    args,
    {
      BENCH_ROLE: role,
      BENCH_CTXFLOW: variant === 'c' || variant === 'd' || variant === 'g' ? '1' : '0',
      BENCH_FETCH_BY_HAND: variant === 'g' ? '1' : '0',
      BENCH_HEADERS: variant === 'e' || variant === 'f' || variant === 'g' ? '1' : '0',
      BENCH_ALS: variant === 'f' ? '1' : '0',
      ...(next === undefined ? {} : { BENCH_NEXT: next }),
    },
    `${variant}/${role}`,
  );
}

const HOW = { connections: CONNECTIONS, warmupSeconds: WARMUP_SECONDS, seconds: SECONDS };

function cancellation(): Record<string, { p50: number; p99: number; max: number; trials: number }> {
  const args = ['--conditions=ctxflow-source', here('./http/cancel.ts')];
  const [command, argv] = pinned ? ['taskset', ['-c', '1', node, ...args]] : [node, args];
  const out = spawnSync(command as string, argv as string[], { encoding: 'utf8', timeout: 60_000 });
  if (out.status !== 0) throw new Error(`cancellation bench failed: ${out.stderr}`);
  return JSON.parse(out.stdout.trim().split('\n').at(-1) as string);
}

const servers = new Map<Variant, [Server, Server]>();
try {
  for (const variant of VARIANTS) {
    const b = await startVariantServer(variant, 'B');
    const a = await startVariantServer(variant, 'A', `http://127.0.0.1:${b.port}`);
    servers.set(variant, [a, b]);
  }
  process.stderr.write(
    `node ${process.version}, ${CORES} cores, ${pinned ? 'load generator on core 0, servers on core 1' : 'not pinned'}, ` +
      `${CONNECTIONS} connections, ${ROUNDS} rounds of ${SECONDS} s after ${WARMUP_SECONDS} s warm-up each\n`,
  );
  const runs = new Map<Variant, ChainRun[]>(VARIANTS.map((v) => [v, []]));
  for (let round = 1; round <= ROUNDS; round++) {
    process.stderr.write(`round ${round}\n`);
    for (const variant of VARIANTS) {
      const [a, b] = servers.get(variant) as [Server, Server];
      runs.get(variant)?.push(await measureChain(LABELS[variant], a, b, HOW));
    }
  }
  for (const variant of VARIANTS.filter((v) => v === 'b' || v === 'c')) {
    const [a, b] = servers.get(variant) as [Server, Server];
    const spans = [await spanCount(a), await spanCount(b)];
    if (spans.some((count) => count === 0))
      throw new Error(`variant ${variant}: no spans exported, instrumentation not live`);
  }

  const rows = chainTableHeader('variant');
  const medians = new Map<Variant, ChainRun>();
  for (const variant of VARIANTS) {
    const { medians: m, row } = chainMedians(LABELS[variant], runs.get(variant) as ChainRun[]);
    medians.set(variant, m);
    rows.push(row);
  }
  const ratio = (x: number, y: number) => (x / y).toFixed(2);
  rows.push('');
  rows.push('ratios of medians:');
  const compare = (name: Variant, base: Variant) => {
    const x = medians.get(name);
    const y = medians.get(base);
    if (x === undefined || y === undefined) return;
    const perRound = (runs.get(name) as ChainRun[]).map((run, i) =>
      ratio(run.rps, ((runs.get(base) as ChainRun[])[i] as ChainRun).rps),
    );
    rows.push(
      `  ${name}/${base}: req/s ${ratio(x.rps, y.rps)} (per round ${perRound.join(' ')}), p50 ${ratio(x.p50, y.p50)}, ` +
        `p99 ${ratio(x.p99, y.p99)}, server CPU/req ${ratio(x.cpuUsPerRequest, y.cpuUsPerRequest)} ` +
        `(${(x.cpuUsPerRequest - y.cpuUsPerRequest).toFixed(0)} us, two hops)`,
    );
  };
  compare('b', 'a');
  compare('c', 'b');
  compare('d', 'a');
  compare('e', 'a');
  compare('d', 'e');
  compare('f', 'e');
  compare('d', 'f');
  compare('g', 'f');
  compare('d', 'g');

  for (const [, [a, b]] of servers) {
    a.child.disconnect();
    b.child.disconnect();
  }
  servers.clear();

  const cancel = cancellation();
  rows.push('');
  rows.push(
    'cancellation latency, client abort at A -> C handler signal (three hops, one process, 1,000 trials):',
  );
  for (const [mode, r] of Object.entries(cancel)) {
    rows.push(
      `  disconnect: ${mode.padEnd(5)} p50 ${r.p50.toFixed(3)} ms  p99 ${r.p99.toFixed(3)} ms  max ${r.max.toFixed(3)} ms  (${r.trials} trials)`,
    );
  }
  console.log(rows.join('\n'));
} finally {
  for (const [, [a, b]] of servers) {
    a.child.kill();
    b.child.kill();
  }
}
