import { fileURLToPath } from 'node:url';
import { type BenchServer, CORES, pinned, startServer } from './support/servers.ts';
import { cpuSeconds, machineBusySeconds, median, range } from './support/stats.ts';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 8);
const WARMUP_SECONDS = 2;
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 32);
const VARIANTS = ['bare', 'ctxflow', 'guard'] as const;
type Variant = (typeof VARIANTS)[number];
const LABELS: Record<Variant, string> = {
  bare: 'without ctxflow',
  ctxflow: 'ctxflow, default reset guard',
  guard: 'ctxflow + resetGuard()',
};
const ROLES = ['D', 'C', 'B', 'A'] as const;
type Role = (typeof ROLES)[number];

const _node = process.execPath;
const here = (path: string) => fileURLToPath(new URL(path, import.meta.url));
interface Hop extends BenchServer {
  readonly role: Role;
}

interface Counters {
  started: number;
  completed: number;
  cut: number;
  errors: number;
  firstError: string;
}

async function startHop(variant: Variant, role: Role, next: string): Promise<Hop> {
  const args = ['--conditions=ctxflow-source', here('./goodput/hop.ts')];
  const server = await startServer(
    args,
    {
      GOODPUT_ROLE: role,
      GOODPUT_NEXT: next,
      GOODPUT_CTXFLOW: variant === 'bare' ? '0' : '1',
      GOODPUT_RESET_GUARD: variant === 'guard' ? '1' : '0',
    },
    `${variant}/${role}`,
  );
  return { role, ...server };
}

async function startChain(variant: Variant): Promise<Hop[]> {
  const hops: Hop[] = [];
  let next = '';
  for (const role of ROLES) {
    const hop = await startHop(variant, role, next);
    hops.push(hop);
    next = role === 'D' ? `127.0.0.1:${hop.port}` : `http://127.0.0.1:${hop.port}`;
  }
  return hops;
}

function counters(hop: Hop): Promise<Counters> {
  return new Promise((resolve) => {
    hop.child.once('message', (message: Counters) => resolve(message));
    hop.child.send({ type: 'counters' });
  });
}

type Kind = 'normal' | 'deadline' | 'abandon';
// 4 normal, 3 deadline, 3 abandoned in every 10 requests, interleaved.
const PATTERN: Kind[] = [
  'normal',
  'deadline',
  'abandon',
  'normal',
  'abandon',
  'deadline',
  'normal',
  'abandon',
  'deadline',
  'normal',
];

interface Tally {
  sent: number;
  answered: number;
  succeeded: number;
  normal: number;
  normalOk: number;
  status5xx: number;
  normal5xx: number;
  successMs: number[];
}

function newTally(): Tally {
  return {
    sent: 0,
    answered: 0,
    succeeded: 0,
    normal: 0,
    normalOk: 0,
    status5xx: 0,
    normal5xx: 0,
    successMs: [],
  };
}

/** The closed loop: CONCURRENCY workers, each sending its next request when the last one ends. */
async function drive(url: string, seconds: number, tally: Tally): Promise<void> {
  let sequence = 0;
  const until = performance.now() + seconds * 1000;
  const worker = async () => {
    while (performance.now() < until) {
      const k = sequence++;
      const kind = PATTERN[k % PATTERN.length] as Kind;
      const budgetMs = kind === 'deadline' ? 100 : 1000;
      const controller = new AbortController();
      // The client gives up on abandoned requests; others it waits for (5 s at most).
      const giveUpMs = kind === 'abandon' ? 5 + ((k * 37) % 76) : 5_000;
      const timer = setTimeout(() => controller.abort(), giveUpMs);
      const start = performance.now();
      tally.sent++;
      if (kind === 'normal') tally.normal++;
      try {
        const answer = await fetch(url, {
          headers: { 'ctx-timeout': String(budgetMs) },
          signal: controller.signal,
        });
        await answer.arrayBuffer();
        const ms = performance.now() - start;
        tally.answered++;
        if (answer.status >= 500 && answer.status !== 504) {
          tally.status5xx++;
          if (kind === 'normal') tally.normal5xx++;
        }
        if (answer.status === 200 && ms <= budgetMs && kind !== 'abandon') {
          tally.succeeded++;
          tally.successMs.push(ms);
          if (kind === 'normal') tally.normalOk++;
        }
      } catch {
        // Abandoned by the client: neither answered nor a success.
      } finally {
        clearTimeout(timer);
      }
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
}

function percentile(values: number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((x, y) => x - y);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] as number;
}

interface Run {
  answeredPerSecond: number;
  successPerSecond: number;
  cutShare: number;
  p50: number;
  p99: number;
  cpuMsPerSuccess: number;
  normal5xx: number;
  status5xx: number;
  normalOkShare: number;
  otherLoad: number;
  firstError: string;
}

async function measure(hops: Hop[]): Promise<Run> {
  const url = `http://127.0.0.1:${(hops.find((hop) => hop.role === 'A') as Hop).port}/`;
  await drive(url, WARMUP_SECONDS, newTally());
  // Reading the counters resets them: the window starts at zero.
  await Promise.all(hops.map(counters));
  const tally = newTally();
  const cpuBefore = hops.map((hop) => cpuSeconds(hop.child.pid as number));
  const selfBefore = process.cpuUsage();
  const busyBefore = machineBusySeconds();
  const start = performance.now();
  await drive(url, SECONDS, tally);
  const elapsed = (performance.now() - start) / 1000;
  const busy = machineBusySeconds() - busyBefore;
  const cpu = hops.reduce(
    (sum, hop, i) => sum + cpuSeconds(hop.child.pid as number) - (cpuBefore[i] as number),
    0,
  );
  const self = process.cpuUsage(selfBefore);
  const after = await Promise.all(hops.map(counters));
  const d = after[ROLES.indexOf('D')] as Counters;
  const errors = after.filter((c) => c.errors > 0);
  return {
    answeredPerSecond: tally.answered / elapsed,
    successPerSecond: tally.succeeded / elapsed,
    cutShare: d.started === 0 ? 0 : d.cut / d.started,
    p50: percentile(tally.successMs, 50),
    p99: percentile(tally.successMs, 99),
    cpuMsPerSuccess: (cpu * 1000) / Math.max(1, tally.succeeded),
    normal5xx: tally.normal5xx,
    status5xx: tally.status5xx,
    normalOkShare: tally.normalOk / Math.max(1, tally.normal),
    otherLoad: Math.max(0, busy - cpu - (self.user + self.system) / 1e6) / elapsed,
    firstError: errors[0]?.firstError ?? '',
  };
}

const began = performance.now();
const chains = new Map<Variant, Hop[]>();
for (const variant of VARIANTS) chains.set(variant, await startChain(variant));
const runs = new Map<Variant, Run[]>(VARIANTS.map((variant) => [variant, []]));
try {
  for (let round = 0; round < ROUNDS; round++) {
    for (const variant of VARIANTS) {
      const run = await measure(chains.get(variant) as Hop[]);
      (runs.get(variant) as Run[]).push(run);
      console.error(
        `round ${round + 1} ${variant}: ${run.successPerSecond.toFixed(1)} ok/s, ${run.answeredPerSecond.toFixed(1)} answered/s, 5xx ${run.status5xx}`,
      );
    }
  }
} finally {
  for (const hops of chains.values()) for (const hop of hops) hop.child.kill();
}

const cell = (values: number[], digits: number) =>
  `${median(values).toFixed(digits)} (${range(values, digits)})`;
const column = (variant: Variant, pick: (run: Run) => number) => (runs.get(variant) as Run[]).map(pick);

console.log(
  `node ${process.version}, ${CORES} cores${pinned ? ', load on core 0, the chain on core 1' : ''}; ` +
    `${CONCURRENCY} requests in flight; ${ROUNDS} rounds of ${SECONDS} s after ${WARMUP_SECONDS} s of warm-up; ` +
    'mix: 40% normal (1 s), 30% 100 ms budget, 30% abandoned after 5-80 ms\n',
);
console.log(
  '| variant | answered/s | successful/s (200 within budget) | normal requests OK | work cut short at D | p50 ms of successes | p99 ms of successes | chain CPU ms per success | 5xx (normal) | other load, cores |',
);
console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
for (const variant of VARIANTS) {
  const sum = (pick: (run: Run) => number) => column(variant, pick).reduce((a, b) => a + b, 0);
  console.log(
    `| ${LABELS[variant]} | ${cell(
      column(variant, (r) => r.answeredPerSecond),
      1,
    )} | ${cell(
      column(variant, (r) => r.successPerSecond),
      1,
    )} | ${cell(
      column(variant, (r) => r.normalOkShare * 100),
      1,
    )}% | ${cell(
      column(variant, (r) => r.cutShare * 100),
      1,
    )}% | ${cell(
      column(variant, (r) => r.p50),
      1,
    )} | ${cell(
      column(variant, (r) => r.p99),
      1,
    )} | ${cell(
      column(variant, (r) => r.cpuMsPerSuccess),
      2,
    )} | ${sum((r) => r.status5xx)} (${sum((r) => r.normal5xx)}) | ${cell(
      column(variant, (r) => r.otherLoad),
      2,
    )} |`,
  );
}
const ratio = (variant: Variant, pick: (run: Run) => number) =>
  (median(column(variant, pick)) / median(column('bare', pick))).toFixed(2);
console.log(
  `\nratios against without ctxflow (medians): successful/s ctxflow ${ratio('ctxflow', (r) => r.successPerSecond)}x, +guard ${ratio('guard', (r) => r.successPerSecond)}x; ` +
    `answered/s ctxflow ${ratio('ctxflow', (r) => r.answeredPerSecond)}x, +guard ${ratio('guard', (r) => r.answeredPerSecond)}x; ` +
    `CPU per success ctxflow ${ratio('ctxflow', (r) => r.cpuMsPerSuccess)}x, +guard ${ratio('guard', (r) => r.cpuMsPerSuccess)}x`,
);
for (const variant of VARIANTS) {
  const first = (runs.get(variant) as Run[]).find((r) => r.firstError !== '')?.firstError;
  if (first !== undefined) console.log(`${LABELS[variant]}: first handler error: ${first}`);
}
console.log(`whole run: ${((performance.now() - began) / 1000).toFixed(0)} s`);
