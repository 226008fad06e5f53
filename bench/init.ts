// init() bench: client -> A -> B (express, global fetch between them, no ctxflow code in the
// service), four layers in the same run, interleaved:
//   bare      nothing preloaded
//   ctxflow   init({ tracing: false }): deadlines and cancellation, no span SDK
//   otel      NodeSDK with http/express/undici instrumentation (bench/http/otel.ts), spans dropped
//   init      init() with tracing: the same SDK set-up plus ctxflow, spans dropped
//   metrics   init as above, with metrics on (a Prometheus endpoint, not scraped)
// Then init()'s start-up time in fresh processes. Pinned as bench/http.ts (load generator on core
// 0, servers on core 1). Environment: BENCH_ROUNDS (5), BENCH_SECONDS (5), BENCH_CONNECTIONS (10),
// BENCH_LAYERS (comma-separated subset; the ratios need all five).
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { type ChainRun, chainMedians, chainTableHeader, measureChain } from './support/chain.ts';
import { type BenchServer, CORES, pinned, spanCount, startServer } from './support/servers.ts';
import { median, range } from './support/stats.ts';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const WARMUP_SECONDS = 1.5;
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 10);
const STARTUP_RUNS = 7;
const ALL_LAYERS = ['bare', 'ctxflow', 'otel', 'init', 'metrics'] as const;
type Layer = (typeof ALL_LAYERS)[number];
const LAYERS = ALL_LAYERS.filter((layer) =>
  (process.env.BENCH_LAYERS ?? ALL_LAYERS.join(',')).split(',').includes(layer),
);

const node = process.execPath;
const here = (path: string) => fileURLToPath(new URL(path, import.meta.url));
type Server = BenchServer;

const PRELOAD: Record<Layer, string[]> = {
  bare: [],
  ctxflow: ['--import', here('./init/preload.ts')],
  otel: ['--import', here('./http/otel.ts')],
  init: ['--import', here('./init/preload.ts')],
  metrics: ['--import', here('./init/preload.ts')],
};

function startLayerServer(layer: Layer, role: 'A' | 'B', next?: string): Promise<Server> {
  const args = ['--conditions=ctxflow-source', ...PRELOAD[layer], here('./http/server.ts')];
  return startServer(
    args,
    {
      BENCH_ROLE: role,
      BENCH_LAYER: layer,
      BENCH_CTXFLOW: '0',
      ...(next === undefined ? {} : { BENCH_NEXT: next }),
    },
    `${layer}/${role}`,
  );
}

const HOW = { connections: CONNECTIONS, warmupSeconds: WARMUP_SECONDS, seconds: SECONDS };

function startup(tracing: boolean): { importMs: number; initMs: number } {
  const out = spawnSync(node, ['--conditions=ctxflow-source', here('./init/startup.ts')], {
    encoding: 'utf8',
    env: { ...process.env, BENCH_TRACING: tracing ? '1' : '0' },
    timeout: 30_000,
  });
  if (out.status !== 0) throw new Error(`start-up bench failed: ${out.stderr}`);
  return JSON.parse(out.stdout.trim().split('\n').at(-1) as string);
}

const servers = new Map<Layer, [Server, Server]>();
try {
  for (const layer of LAYERS) {
    const b = await startLayerServer(layer, 'B');
    const a = await startLayerServer(layer, 'A', `http://127.0.0.1:${b.port}`);
    servers.set(layer, [a, b]);
  }
  process.stderr.write(
    `node ${process.version}, ${CORES} cores, ${pinned ? 'load generator on core 0, servers on core 1' : 'not pinned'}, ` +
      `${CONNECTIONS} connections, ${ROUNDS} rounds of ${SECONDS} s after ${WARMUP_SECONDS} s warm-up each\n`,
  );
  const runs = new Map<Layer, ChainRun[]>(LAYERS.map((layer) => [layer, []]));
  for (let round = 1; round <= ROUNDS; round++) {
    process.stderr.write(`round ${round}\n`);
    for (const layer of LAYERS) {
      const [a, b] = servers.get(layer) as [Server, Server];
      runs.get(layer)?.push(await measureChain(layer, a, b, HOW));
    }
  }
  for (const layer of LAYERS.filter((l) => l === 'otel' || l === 'init' || l === 'metrics')) {
    const [a, b] = servers.get(layer) as [Server, Server];
    if ((await spanCount(a)) === 0 || (await spanCount(b)) === 0) {
      throw new Error(`${layer}: no spans exported, instrumentation not live`);
    }
  }

  const rows = chainTableHeader('layer');
  const medians = new Map<Layer, ChainRun>();
  for (const layer of LAYERS) {
    const { medians: m, row } = chainMedians(layer, runs.get(layer) as ChainRun[]);
    medians.set(layer, m);
    rows.push(row);
  }
  const m = (layer: Layer) =>
    medians.get(layer) ?? {
      rps: Number.NaN,
      p50: Number.NaN,
      p99: Number.NaN,
      cpuUsPerRequest: Number.NaN,
      errors: 0,
    };
  const ratio = (x: number, y: number) => (x / y).toFixed(2);
  rows.push('');
  rows.push(
    `ctxflow/bare: req/s ${ratio(m('ctxflow').rps, m('bare').rps)}, CPU/req ${ratio(m('ctxflow').cpuUsPerRequest, m('bare').cpuUsPerRequest)}`,
  );
  rows.push(
    `otel/bare: req/s ${ratio(m('otel').rps, m('bare').rps)}, CPU/req ${ratio(m('otel').cpuUsPerRequest, m('bare').cpuUsPerRequest)}`,
  );
  rows.push(
    `init/otel: req/s ${ratio(m('init').rps, m('otel').rps)}, p50 ${ratio(m('init').p50, m('otel').p50)}, ` +
      `p99 ${ratio(m('init').p99, m('otel').p99)}, CPU/req ${ratio(m('init').cpuUsPerRequest, m('otel').cpuUsPerRequest)}`,
  );
  rows.push(
    `metrics/init: req/s ${ratio(m('metrics').rps, m('init').rps)}, CPU/req ${ratio(m('metrics').cpuUsPerRequest, m('init').cpuUsPerRequest)}`,
  );

  for (const [, [a, b]] of servers) {
    a.child.disconnect();
    b.child.disconnect();
  }
  servers.clear();

  rows.push('');
  rows.push(`start-up, median of ${STARTUP_RUNS} fresh processes (range):`);
  for (const tracing of [false, true]) {
    const samples = Array.from({ length: STARTUP_RUNS }, () => startup(tracing));
    const imports = samples.map((s) => s.importMs);
    const inits = samples.map((s) => s.initMs);
    rows.push(
      `  tracing ${String(tracing).padEnd(5)}: import ctxflow/init ${median(imports).toFixed(1)} ms (${range(imports, 1)}), ` +
        `init() ${median(inits).toFixed(1)} ms (${range(inits, 1)})`,
    );
  }
  console.log(rows.join('\n'));
} finally {
  for (const [, [a, b]] of servers) {
    a.child.kill();
    b.child.kill();
  }
}
