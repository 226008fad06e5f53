/**
 * Overhead of wrapping a call in retry + breaker + bulkhead (`wrap(retry, breaker, bulkhead)`),
 * against the bare call, in the same run, under a request context with a deadline:
 *   1. around an in-process async call (the policies' own cost, ns per call);
 *   2. around a ctxflow fetch to a loopback node:http server in a child process (p50, p99 and
 *      client CPU per request), 16 calls in flight.
 * Variants are interleaved (a, b, ..., a, b, ...) and each figure is the median of the rounds,
 * with the spread. With taskset and 2+ cores this process runs on core 0, the server on core 1.
 * Environment: BENCH_ROUNDS (default 7), BENCH_REQUESTS (HTTP requests per round and variant, default 4000).
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { fetch } from '../adapters/http/fetch.ts';
import { background, run, withTimeout } from '../sdk/index.ts';
import { breaker, bulkhead, type Policy, retry, wrap } from '../sdk/resilience/index.ts';
import { median, range } from './support/stats.ts';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 7);
const REQUESTS = Number(process.env.BENCH_REQUESTS ?? 4_000);
const CALLS = 200_000;
const IN_FLIGHT = 16;

const pinned = availableParallelism() >= 2 && spawnSync('taskset', ['-V']).status === 0;
if (pinned) spawnSync('taskset', ['-a', '-cp', '0', String(process.pid)], { stdio: 'ignore' });

function policies(): Record<string, Policy | undefined> {
  return {
    'bare call (baseline)': undefined,
    retry: retry(),
    breaker: breaker(),
    bulkhead: bulkhead({ limit: 1_000, queue: 1_000 }),
    'wrap(retry, breaker, bulkhead)': wrap(retry(), breaker(), bulkhead({ limit: 1_000, queue: 1_000 })),
  };
}

let sink = 0;
const call = async () => 1;

async function nsPerCall(policy: Policy | undefined): Promise<number> {
  const start = process.hrtime.bigint();
  if (policy === undefined) for (let i = 0; i < CALLS; i++) sink += await call();
  else for (let i = 0; i < CALLS; i++) sink += await policy.execute(call);
  return Number(process.hrtime.bigint() - start) / CALLS;
}

async function inProcess(): Promise<void> {
  const variants = policies();
  const samples = new Map<string, number[]>(Object.keys(variants).map((name) => [name, []]));
  const ctx = withTimeout(background(), 3_600_000);
  await run(ctx, async () => {
    for (const policy of Object.values(variants)) await nsPerCall(policy);
    for (let round = 0; round < ROUNDS; round++) {
      for (const [name, policy] of Object.entries(variants)) samples.get(name)?.push(await nsPerCall(policy));
    }
  });
  ctx.cancel();
  const baseline = median(samples.get('bare call (baseline)') ?? []);
  console.log(
    `\nin-process async call, ns per call, median of ${ROUNDS} interleaved rounds of ${CALLS} (min-max):`,
  );
  for (const [name, xs] of samples) {
    const m = median(xs);
    console.log(
      `  ${name.padEnd(34)} ${m.toFixed(0).padStart(6)} ns  (${range(xs, 0)})  +${(m - baseline).toFixed(0)} ns, x${(m / baseline).toFixed(2)}`,
    );
  }
}

const SERVER = `
const http = require('node:http');
const server = http.createServer((req, res) => res.end('ok'));
server.keepAliveTimeout = 60000;
server.listen(0, '127.0.0.1', () => process.send(server.address().port));
`;

function startServer(): Promise<{ child: ChildProcess; url: string }> {
  const args = ['-e', SERVER];
  const [command, argv] = pinned
    ? ['taskset', ['-c', '1', process.execPath, ...args]]
    : [process.execPath, args];
  const child = spawn(command as string, argv as string[], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  return new Promise((resolve, reject) => {
    child.once('message', (port) => resolve({ child, url: `http://127.0.0.1:${port}/` }));
    child.once('exit', (code) => reject(new Error(`server exited with ${code}`)));
  });
}

interface Round {
  p50: number;
  p99: number;
  cpuUs: number;
}

async function httpRound(url: string, policy: Policy | undefined): Promise<Round> {
  const latencies: number[] = [];
  let next = 0;
  const get = async () => {
    const response = await fetch(url);
    return response.text();
  };
  const worker = async () => {
    while (next++ < REQUESTS) {
      const ctx = withTimeout(background(), 10_000);
      const start = performance.now();
      await run(ctx, () => (policy === undefined ? get() : policy.execute(get)));
      latencies.push(performance.now() - start);
      ctx.cancel();
    }
  };
  const cpu = process.cpuUsage();
  await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
  const used = process.cpuUsage(cpu);
  latencies.sort((x, y) => x - y);
  return {
    p50: latencies[Math.floor(latencies.length * 0.5)] as number,
    p99: latencies[Math.floor(latencies.length * 0.99)] as number,
    cpuUs: (used.user + used.system) / latencies.length,
  };
}

async function overHttp(): Promise<void> {
  const server = await startServer();
  const all = policies();
  const variants: Record<string, Policy | undefined> = {
    'bare fetch (baseline)': all['bare call (baseline)'],
    'wrap(retry, breaker, bulkhead)': all['wrap(retry, breaker, bulkhead)'],
  };
  const rounds = new Map<string, Round[]>(Object.keys(variants).map((name) => [name, []]));
  try {
    for (const policy of Object.values(variants)) await httpRound(server.url, policy);
    for (let round = 0; round < ROUNDS; round++) {
      for (const [name, policy] of Object.entries(variants))
        rounds.get(name)?.push(await httpRound(server.url, policy));
    }
  } finally {
    server.child.kill();
  }
  const base = rounds.get('bare fetch (baseline)') ?? [];
  const baseCpu = median(base.map((r) => r.cpuUs));
  const baseP50 = median(base.map((r) => r.p50));
  console.log(
    `\nctxflow fetch to a loopback server, ${IN_FLIGHT} in flight, ${REQUESTS} requests per round, median of ${ROUNDS} interleaved rounds (min-max):`,
  );
  for (const [name, rs] of rounds) {
    const p50 = rs.map((r) => r.p50);
    const p99 = rs.map((r) => r.p99);
    const cpu = rs.map((r) => r.cpuUs);
    console.log(
      `  ${name.padEnd(32)} p50 ${median(p50).toFixed(3)} ms (${range(p50, 3)})  p99 ${median(p99).toFixed(2)} ms (${range(p99, 2)})  client CPU ${median(cpu).toFixed(1)} us/req (${range(cpu, 1)})  p50 x${(median(p50) / baseP50).toFixed(3)}, CPU x${(median(cpu) / baseCpu).toFixed(3)}`,
    );
  }
}

console.log(
  `ctxflow resilience bench, Node ${process.version}${pinned ? ', client on core 0, server on core 1' : ''}`,
);
await inProcess();
await overHttp();
if (sink === -1) console.log(sink);
