// init() bench, in two parts.
// Start-up, the targets: an express service (bench/init/app.ts, no ctxflow code) started in fresh
// processes until it listens, four set-ups interleaved (their order rotated each round), from the
// built package (`npm run build` first) as users run it:
//   bare      nothing preloaded
//   ctxflow   init({ tracing: false })                                      target: <= bare + 30 ms
//   otel      NodeSDK by hand: the same OTLP/HTTP exporter and instrumentations
//   init      init() with tracing                                           target: <= otel + 150 ms
// Throughput: client -> A -> B (express, global fetch between them, no ctxflow code in the
// service), five layers in the same run, interleaved:
//   bare      nothing preloaded
//   ctxflow   init({ tracing: false }): deadlines and cancellation, no span SDK
//   otel      NodeSDK with http/express/undici instrumentation (bench/http/otel.ts), spans dropped
//   init      init() with tracing: the same SDK set-up plus ctxflow, spans dropped
//   metrics   init as above, with metrics on (a Prometheus endpoint, not scraped)
// Pinned as bench/http.ts (load generator on core 0, servers on core 1); start-up processes get
// every core. Environment: BENCH_STARTUP_ROUNDS (21), BENCH_ROUNDS (5), BENCH_SECONDS (5),
// BENCH_CONNECTIONS (10), BENCH_LAYERS (comma-separated subset; the ratios need all five; empty:
// start-up alone).
import { spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { type ChainRun, chainMedians, chainTableHeader, measureChain } from './support/chain.ts';
import { type BenchServer, CORES, pinned, spanCount, startServer } from './support/servers.ts';
import { median, range } from './support/stats.ts';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const WARMUP_SECONDS = 1.5;
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 10);
const STARTUP_ROUNDS = Number(process.env.BENCH_STARTUP_ROUNDS ?? 21);
const SETUPS = ['bare', 'ctxflow', 'otel', 'init'] as const;
type Setup = (typeof SETUPS)[number];
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

/** One start-up: milliseconds from the process's start until the application listens, and its CPU time by then. */
interface Startup {
  readyMs: number;
  cpuMs: number;
}

/** Starts the application in a fresh process with `setup` preloaded. */
function startup(setup: Setup): Startup {
  const preload: Record<Setup, string[]> = {
    bare: [],
    ctxflow: ['--import', here('./init/setup.ts')],
    otel: ['--import', here('./init/nodesdk.ts')],
    init: ['--import', here('./init/setup.ts')],
  };
  const args = [...preload[setup], here('./init/app.ts')];
  // Every core, as a service gets: this process is pinned to core 0 and its children inherit that.
  const [command, argv] = pinned ? ['taskset', ['-c', `0-${CORES - 1}`, node, ...args]] : [node, args];
  // The OTEL_* and CTXFLOW_* variables of this shell would change what init() sets up.
  const env = Object.fromEntries(
    Object.entries(process.env).filter(([name]) => !/^(OTEL|CTXFLOW)_/.test(name)),
  );
  const out = spawnSync(command as string, argv as string[], {
    encoding: 'utf8',
    env: { ...env, BENCH_TRACING: setup === 'init' ? '1' : '0' },
    timeout: 30_000,
  });
  if (out.status !== 0) throw new Error(`start-up of ${setup} failed: ${out.stderr}`);
  return JSON.parse(out.stdout.trim().split('\n').at(-1) as string) as Startup;
}

/**
 * The start-up part: each set-up's p50 and range, then the two comparisons as the p50 of
 * the per-round differences (each round runs every set-up once, so a busy moment touches both sides)
 * beside their range; wall time (the target) and CPU time (less sensitive to other load).
 */
function startupReport(): string[] {
  // The package as published (compiled JavaScript), not the sources through the type stripper.
  rmSync(here('../dist'), { recursive: true, force: true });
  const built = spawnSync('npm', ['run', '-s', 'build'], { cwd: here('..'), stdio: 'inherit' });
  if (built.status !== 0) throw new Error('npm run build failed');
  const samples = new Map<Setup, Startup[]>(SETUPS.map((setup) => [setup, []]));
  startup('init'); // once unmeasured: the file system cache warm for every set-up
  for (let round = 0; round < STARTUP_ROUNDS; round++) {
    process.stderr.write(`start-up round ${round + 1}\n`);
    for (let i = 0; i < SETUPS.length; i++) {
      const setup = SETUPS[(round + i) % SETUPS.length] as Setup;
      samples.get(setup)?.push(startup(setup));
    }
  }
  const of = (setup: Setup, key: keyof Startup) => (samples.get(setup) as Startup[]).map((s) => s[key]);
  const label: Record<Setup, string> = {
    bare: 'bare app',
    ctxflow: 'init({ tracing: false })',
    otel: 'NodeSDK by hand (OTLP/HTTP)',
    init: 'init() (OTLP/HTTP)',
  };
  const figure = (values: number[]) => `${median(values).toFixed(1)} (${range(values, 1)})`;
  const rows = [
    `start-up of an express app in fresh processes, ${STARTUP_ROUNDS} rounds, set-ups interleaved; ms, p50 (range)`,
    `  ${'set-up'.padEnd(28)} ${'until it listens'.padEnd(24)} CPU time by then`,
  ];
  for (const setup of SETUPS) {
    rows.push(
      `  ${label[setup].padEnd(28)} ${figure(of(setup, 'readyMs')).padEnd(24)} ${figure(of(setup, 'cpuMs'))}`,
    );
  }
  const difference = (setup: Setup, base: Setup, key: keyof Startup) => {
    const baseline = of(base, key);
    return of(setup, key).map((ms, round) => ms - (baseline[round] as number));
  };
  const compare = (setup: Setup, base: Setup, targetMs: number) => {
    const wall = difference(setup, base, 'readyMs');
    const met = median(wall) <= targetMs ? 'met' : 'NOT met';
    return (
      `  ${label[setup]} over ${label[base]}: ${signed(median(wall))} ms (${range(wall, 1)}), ` +
      `target +${targetMs} ms ${met}; CPU ${signed(median(difference(setup, base, 'cpuMs')))} ms`
    );
  };
  rows.push(
    'per-round differences, p50 (range):',
    compare('ctxflow', 'bare', 30),
    compare('init', 'otel', 150),
  );
  return rows;
}

function signed(ms: number): string {
  return `${ms >= 0 ? '+' : ''}${ms.toFixed(1)}`;
}

const report = startupReport();
if (LAYERS.length === 0) {
  console.log(report.join('\n'));
  process.exit(0);
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

  rows.push('', ...report);
  console.log(rows.join('\n'));
} finally {
  for (const [, [a, b]] of servers) {
    a.child.kill();
    b.child.kill();
  }
}
