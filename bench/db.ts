/**
 * `npm run bench:db`: the database hop, with and without ctxflow, in one run.
 *
 * 1. Goodput: an express service over a pool of 10 connections, each request one 100 ms query
 *    (`pg_sleep`), 32 requests in flight: 40% normal (1 s budget), 30% whose 60 ms budget runs out
 *    mid-query, 30% abandoned by their client after 5-80 ms. Interleaved rounds, medians: successful
 *    answers per second, pool wait p50/p99, and the queries still running on the server for a request
 *    that had ended (pg_stat_activity, sampled every 25 ms).
 * 2. Cancel to gone: a context cancelled under a running query, until pg_stat_activity shows its
 *    session idle: p50, p99.
 * 3. Client CPU per query: `select 1` on one connection, plain pg against a client ctxflow equips
 *    running under a live context with a deadline; interleaved rounds, medians.
 *
 * Needs PostgreSQL: POSTGRES_URL, or `eval "$(npm run -s infra -- up postgres)"` first.
 */
import { randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { context as otel, ROOT_CONTEXT } from '@opentelemetry/api';
import express from 'express';
import pg from 'pg';
import { deadlines } from '../adapters/http/express.ts';
import { client as equipClient, pool as equipPool } from '../adapters/pg/index.ts';
import { background, withCancel, withTimeout } from '../sdk/index.ts';
import { median, range } from './support/stats.ts';

const URL_ = process.env.POSTGRES_URL;
if (URL_ === undefined) {
  console.error('bench:db needs POSTGRES_URL: eval "$(npm run -s infra -- up postgres)" first');
  process.exit(1);
}
const url: string = URL_;
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 6);
const IN_FLIGHT = 32;
const POOL = 10;
const VARIANTS = ['plain', 'ctxflow'] as const;
type Variant = (typeof VARIANTS)[number];
const LABELS: Record<Variant, string> = { plain: 'without ctxflow', ctxflow: 'with ctxflow (ctxflow/pg)' };

function percentile(values: number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number;
}

interface Round {
  successPerSecond: number;
  normalFailed: number;
  waitP50: number;
  waitP99: number;
  orphansMean: number;
  orphanShare: number;
}

/** One round of the goodput scenario against a fresh service and pool. */
async function goodputRound(variant: Variant): Promise<Round> {
  const app = `bench-${randomBytes(4).toString('hex')}`;
  const raw = new pg.Pool({ connectionString: url, max: POOL, application_name: app });
  const db = variant === 'ctxflow' ? equipPool(raw) : raw;
  const waits: number[] = [];
  const service = express();
  if (variant === 'ctxflow') service.use(deadlines({ budgetMs: 2_000 }));
  service.get('/q/:id', async (req, res) => {
    const asked = performance.now();
    try {
      const client = await db.connect();
      waits.push(performance.now() - asked);
      try {
        await client.query(`select pg_sleep(0.1) /*r${req.params.id}*/`);
      } finally {
        client.release();
      }
      res.json({ ok: true });
    } catch {
      if (!res.headersSent) res.status(504).end();
    }
  });
  const server = service.listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  const ended = new Set<number>();
  let next = 0;
  let success = 0;
  let normalFailed = 0;
  let measuring = false;
  let stop = false;
  const request = async (id: number) => {
    const kind = id % 10 < 4 ? 'normal' : id % 10 < 7 ? 'short' : 'abandoned';
    const budget = kind === 'normal' ? 1_000 : kind === 'short' ? 60 : 5 + ((id * 37) % 76);
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), budget);
    const started = performance.now();
    let ok = false;
    try {
      const response = await fetch(`${base}/q/${id}`, {
        headers: { 'ctx-timeout': String(budget) },
        signal: abort.signal,
      });
      await response.arrayBuffer();
      ok = response.status === 200 && performance.now() - started <= budget;
    } catch {
      // Aborted: the client gave up.
    } finally {
      clearTimeout(timer);
      ended.add(id);
    }
    if (!measuring) return;
    if (ok) success++;
    else if (kind === 'normal') normalFailed++;
  };
  const worker = async () => {
    while (!stop) await otel.with(ROOT_CONTEXT, () => request(next++));
  };
  // Queries still running on the server for requests that have ended, sampled from outside.
  const monitor = new pg.Client({ connectionString: url, application_name: `${app}-monitor` });
  await monitor.connect();
  const orphanSamples: number[] = [];
  const sampler = (async () => {
    while (!stop) {
      const { rows } = await monitor.query<{ query: string }>(
        "select query from pg_stat_activity where application_name = $1 and state = 'active'",
        [app],
      );
      if (measuring) {
        orphanSamples.push(
          rows.filter((row) => {
            const id = /\/\*r(\d+)\*\//.exec(row.query)?.[1];
            return id !== undefined && ended.has(Number(id));
          }).length,
        );
      }
      await sleep(25);
    }
  })();
  const workers = Array.from({ length: IN_FLIGHT }, worker);
  await sleep(1_000);
  waits.length = 0;
  measuring = true;
  const started = performance.now();
  await sleep(SECONDS * 1_000);
  measuring = false;
  const seconds = (performance.now() - started) / 1000;
  const measuredWaits = [...waits];
  stop = true;
  await Promise.all(workers);
  await sampler;
  await monitor.end();
  await new Promise((resolve) => server.close(resolve));
  server.closeAllConnections();
  // Let the plain pool's orphaned queries finish before ending it.
  await sleep(300);
  await raw.end();
  return {
    successPerSecond: success / seconds,
    normalFailed,
    waitP50: percentile(measuredWaits, 50),
    waitP99: percentile(measuredWaits, 99),
    orphansMean: orphanSamples.reduce((a, b) => a + b, 0) / Math.max(1, orphanSamples.length),
    orphanShare: orphanSamples.filter((n) => n > 0).length / Math.max(1, orphanSamples.length),
  };
}

/** Cancel to gone: from ctx.cancel() under a running query to its session idle in pg_stat_activity. */
async function cancelToGone(count: number): Promise<number[]> {
  const raw = new pg.Pool({ connectionString: url, max: 1 });
  const db = equipPool(raw);
  const monitor = new pg.Client({ connectionString: url });
  await monitor.connect();
  const held = await db.connect();
  const pid = (await held.query<{ pid: number }>('select pg_backend_pid() as pid')).rows[0]?.pid;
  held.release();
  const times: number[] = [];
  const state = async () =>
    (await monitor.query<{ state: string }>('select state from pg_stat_activity where pid = $1', [pid]))
      .rows[0]?.state;
  for (let i = 0; i < count; i++) {
    const ctx = withCancel(background());
    const query = ctx.run(() => db.query('select pg_sleep(5)')).catch(() => {});
    while ((await state()) !== 'active') await sleep(1);
    const started = performance.now();
    ctx.cancel();
    while ((await state()) === 'active') {
      // Polled back to back: each poll is one round trip on loopback.
    }
    times.push(performance.now() - started);
    await query;
  }
  await monitor.end();
  await raw.end();
  return times;
}

/**
 * Client CPU per `select 1` in microseconds, on one connection, `n` queries in a row; ctxflow's run
 * under one live context with a deadline, as a request's queries are (the context is the request's
 * cost, measured in bench:core, not the query's).
 */
async function cpuPerQuery(variant: Variant, n: number): Promise<number> {
  const raw = new pg.Client({ connectionString: url });
  await raw.connect();
  const client = variant === 'ctxflow' ? equipClient(raw) : raw;
  const ctx = withTimeout(background(), 600_000);
  const loop = async (count: number) => {
    for (let i = 0; i < count; i++) await client.query('select 1');
  };
  await ctx.run(() => loop(200));
  const before = process.cpuUsage();
  await ctx.run(() => loop(n));
  const used = process.cpuUsage(before);
  ctx.cancel();
  await raw.end();
  return (used.user + used.system) / n;
}

const fmt = (n: number, digits = 1) => n.toFixed(digits);

console.log(`bench:db, Node ${process.version}, ${ROUNDS} interleaved rounds of ${SECONDS} s per variant`);
console.log(
  `goodput: pool of ${POOL}, 100 ms queries, ${IN_FLIGHT} requests in flight: 40% normal (1 s), 30% with 60 ms budgets, 30% abandoned after 5-80 ms`,
);
const rounds: Record<Variant, Round[]> = { plain: [], ctxflow: [] };
for (let r = 0; r < ROUNDS; r++) {
  for (const variant of VARIANTS) rounds[variant].push(await goodputRound(variant));
}
console.log('');
console.log(
  '| | successful/s | normal requests failed | pool wait p50 | pool wait p99 | queries running for an ended request (mean) | share of samples with one |',
);
console.log('|---|---|---|---|---|---|---|');
for (const variant of VARIANTS) {
  const rs = rounds[variant];
  const pick = (f: (r: Round) => number) => rs.map(f);
  console.log(
    `| ${LABELS[variant]} | ${fmt(median(pick((r) => r.successPerSecond)))} (${range(
      pick((r) => r.successPerSecond),
      1,
    )}) | ${pick((r) => r.normalFailed).join(', ')} | ${fmt(median(pick((r) => r.waitP50)))} ms | ${fmt(median(pick((r) => r.waitP99)))} ms | ${fmt(median(pick((r) => r.orphansMean)), 2)} | ${fmt(100 * median(pick((r) => r.orphanShare)), 0)}% |`,
  );
}
const ratio =
  median(rounds.ctxflow.map((r) => r.successPerSecond)) / median(rounds.plain.map((r) => r.successPerSecond));
console.log(`goodput ratio (medians): ${fmt(ratio, 2)}x`);

const gone = await cancelToGone(Number(process.env.BENCH_CANCELS ?? 300));
console.log('');
console.log(
  `cancel -> gone from pg_stat_activity, ${gone.length} cancels: p50 ${fmt(percentile(gone, 50), 2)} ms, p99 ${fmt(percentile(gone, 99), 2)} ms, max ${fmt(Math.max(...gone), 2)} ms`,
);

const cpu: Record<Variant, number[]> = { plain: [], ctxflow: [] };
for (let r = 0; r < 21; r++)
  for (const variant of VARIANTS) cpu[variant].push(await cpuPerQuery(variant, 4_000));
const overheads = cpu.plain.map((plain, i) => (cpu.ctxflow[i] as number) - plain);
console.log('');
console.log(
  `client CPU per query (select 1, 21 interleaved rounds of 4000): plain pg ${fmt(median(cpu.plain), 2)} us (${range(cpu.plain, 1)}), ctxflow under a live context ${fmt(median(cpu.ctxflow), 2)} us (${range(cpu.ctxflow, 1)}); overhead ${fmt(median(overheads), 2)} us (median of per-round differences)`,
);
