/**
 * The HTTP chain benches' measurement (bench/http.ts, bench/init.ts): autocannon against hop A of
 * a client -> A -> B chain, CPU of both hops from /proc, and the table of medians over rounds.
 */
import { readFileSync } from 'node:fs';
import autocannon from 'autocannon';
import type { BenchServer } from './servers.ts';
import { cpuSeconds, median, range } from './stats.ts';

/** One measured window of a chain. */
export interface ChainRun {
  rps: number;
  p50: number;
  p99: number;
  /** utime + stime of A and B per request, in µs. */
  cpuUsPerRequest: number;
  errors: number;
}

/** How a chain is loaded: autocannon's connections, the warm-up and the measured window in seconds. */
export interface ChainLoad {
  connections: number;
  warmupSeconds: number;
  seconds: number;
}

async function load(
  url: string,
  connections: number,
  seconds: number,
  latencies?: number[],
): Promise<autocannon.Result> {
  const instance = autocannon({ url, connections, duration: seconds });
  if (latencies !== undefined) {
    instance.on('response', (_client: unknown, _status: number, _bytes: number, ms: number) => {
      latencies.push(ms);
    });
  }
  return await instance;
}

/** Resident set size of a process in MB, from /proc/PID/status. */
function rssMb(pid: number): number {
  const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return match === null ? Number.NaN : Number(match[1]) / 1024;
}

/**
 * Warms the chain up, then loads it for the measured window: throughput over the real window
 * (autocannon's nominal one runs long at times), latencies per response, CPU per request of both
 * hops. Prints a line for it, labelled.
 */
export async function measureChain(
  label: string,
  a: BenchServer,
  b: BenchServer,
  how: ChainLoad,
): Promise<ChainRun> {
  const url = `http://127.0.0.1:${a.port}/`;
  await load(url, how.connections, how.warmupSeconds);
  const pids = [a.child.pid as number, b.child.pid as number];
  const cpuBefore = pids.map(cpuSeconds);
  const latencies: number[] = [];
  const started = process.hrtime.bigint();
  const result = await load(url, how.connections, how.seconds, latencies);
  const elapsed = Number(process.hrtime.bigint() - started) / 1e9;
  const cpu = pids.map(cpuSeconds).reduce((sum, after, i) => sum + after - (cpuBefore[i] as number), 0);
  const sorted = Float64Array.from(latencies).sort();
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] as number;
  const run: ChainRun = {
    rps: latencies.length / elapsed,
    p50: at(0.5),
    p99: at(0.99),
    cpuUsPerRequest: (cpu / latencies.length) * 1e6,
    errors: result.errors + result.non2xx + result.timeouts,
  };
  process.stderr.write(
    `  ${label.padEnd(16)} ${run.rps.toFixed(0).padStart(6)} req/s  p50 ${run.p50.toFixed(2)} ms  ` +
      `p99 ${run.p99.toFixed(2)} ms  ${run.cpuUsPerRequest.toFixed(0)} us CPU/req  errors ${run.errors}  ` +
      `RSS ${pids.map((pid) => rssMb(pid).toFixed(0)).join('+')} MB\n`,
  );
  return run;
}

/** The header of the medians table `chainRow` fills, `name` naming its first column. */
export function chainTableHeader(name: string): string[] {
  return [
    `| ${name} | req/s median (range) | p50 ms | p99 ms | server CPU us/req (A+B) | errors |`,
    '| --- | --- | --- | --- | --- | --- |',
  ];
}

/** The medians of a chain's rounds (errors summed), and their table row with the ranges. */
export function chainMedians(label: string, runs: readonly ChainRun[]): { medians: ChainRun; row: string } {
  const pick = (key: keyof ChainRun) => runs.map((run) => run[key]);
  const medians: ChainRun = {
    rps: median(pick('rps')),
    p50: median(pick('p50')),
    p99: median(pick('p99')),
    cpuUsPerRequest: median(pick('cpuUsPerRequest')),
    errors: pick('errors').reduce((x, y) => x + y, 0),
  };
  const row =
    `| ${label} | ${medians.rps.toFixed(0)} (${range(pick('rps'), 0)}) | ${medians.p50.toFixed(2)} (${range(pick('p50'), 2)}) ` +
    `| ${medians.p99.toFixed(2)} (${range(pick('p99'), 2)}) | ${medians.cpuUsPerRequest.toFixed(0)} (${range(pick('cpuUsPerRequest'), 0)}) | ${medians.errors} |`;
  return { medians, row };
}
