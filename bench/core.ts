/**
 * Costs of the core context: deriving, binding and reading a child, with and without an
 * observed signal; memory per live context; and that a million released contexts leak nothing.
 * Variants are interleaved and each figure is the median of several rounds.
 */
import { createContextKey, context as otel } from '@opentelemetry/api';
import { scheduledCount } from '../sdk/deadline-queue.ts';
import { background, current, run, withTimeout } from '../sdk/index.ts';
import { trackTimers } from '../test/support/timers.ts';

const gc = globalThis.gc;
if (gc === undefined) throw new Error('run with --expose-gc (npm run bench does)');

const ROUNDS = 7;
const OPS = 200_000;
const parent = withTimeout(background(), 60_000);
const key = createContextKey('bench.baseline');
let sink = 0;

const variants: Record<string, () => void> = {
  // The floor: binding a value in the OpenTelemetry context, which ctxflow builds on.
  'otel context.with + getValue (baseline)': () => {
    otel.with(otel.active().setValue(key, parent), () => {
      sink += otel.active().getValue(key) === parent ? 1 : 0;
    });
  },
  'derive(timeout) + run + remaining()': () => {
    const ctx = withTimeout(current(), 1000);
    run(ctx, () => {
      sink += current().remaining();
    });
  },
  'derive(timeout) + run + remaining() + release()': () => {
    const ctx = withTimeout(current(), 1000);
    run(ctx, () => {
      sink += current().remaining();
    });
    ctx.cancel();
  },
  'derive(timeout) + signal observed + release()': () => {
    const ctx = withTimeout(current(), 1000);
    sink += ctx.signal.aborted ? 0 : 1;
    ctx.cancel();
  },
};

function nsPerOp(fn: () => void): number {
  const start = process.hrtime.bigint();
  for (let i = 0; i < OPS; i++) fn();
  return Number(process.hrtime.bigint() - start) / OPS;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? Number.NaN;

function timings(): void {
  const samples = new Map<string, number[]>(Object.keys(variants).map((name) => [name, []]));
  run(parent, () => {
    for (const fn of Object.values(variants)) nsPerOp(fn);
    for (let round = 0; round < ROUNDS; round++) {
      for (const [name, fn] of Object.entries(variants)) samples.get(name)?.push(nsPerOp(fn));
    }
  });
  const baseline = median(samples.get('otel context.with + getValue (baseline)') ?? []);
  console.log(`\nper operation, median of ${ROUNDS} interleaved rounds of ${OPS} (min-max):`);
  for (const [name, xs] of samples) {
    const m = median(xs);
    console.log(
      `  ${name.padEnd(50)} ${m.toFixed(0).padStart(6)} ns  (${Math.min(...xs).toFixed(0)}-${Math.max(...xs).toFixed(0)})  x${(m / baseline).toFixed(2)} of baseline`,
    );
  }
}

function heapUsed(): number {
  gc?.();
  gc?.();
  return process.memoryUsage().heapUsed;
}

function memoryPerContext(): void {
  const n = 100_000;
  for (const observed of [false, true]) {
    const before = heapUsed();
    const live = [];
    for (let i = 0; i < n; i++) {
      const ctx = withTimeout(parent, 60_000);
      if (observed) ctx.signal;
      live.push(ctx);
    }
    const perContext = (heapUsed() - before) / n;
    for (const ctx of live) ctx.cancel();
    console.log(
      `  live context, signal ${observed ? 'observed' : 'never observed'}: ${perContext.toFixed(0)} bytes`,
    );
  }
}

async function millionReleased(): Promise<void> {
  const timers = trackTimers();
  const timersBefore = await timers.live();
  const queuedBefore = scheduledCount();
  const handlesBefore = process.getActiveResourcesInfo().length;
  const heapBefore = heapUsed();
  const start = process.hrtime.bigint();
  for (let i = 0; i < 1_000_000; i++) {
    const ctx = withTimeout(parent, 10_000);
    // Every other one is observed, so half take a place in the deadline queue, a controller and a
    // link to the parent.
    if (i % 2 === 0) ctx.signal;
    ctx.cancel();
  }
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  const leakedDeadlines = scheduledCount() - queuedBefore;
  // At most the deadline queue's one timer, left armed until its time, when it stops.
  const timersLeft = (await timers.live()) - timersBefore;
  const leakedHandles = process.getActiveResourcesInfo().length - handlesBefore;
  const growth = (heapUsed() - heapBefore) / 1024 / 1024;
  timers.stop();
  console.log(
    `  1,000,000 contexts created and released in ${seconds.toFixed(2)} s: ${leakedDeadlines} deadlines left in the queue, ` +
      `${timersLeft} timer left (the queue's one at most, stopping at its time) and ${leakedHandles} handles, ` +
      `heap ${growth >= 0 ? '+' : ''}${growth.toFixed(2)} MB after GC`,
  );
  if (leakedDeadlines !== 0 || timersLeft > 1 || leakedHandles !== 0 || growth >= 10) process.exitCode = 1;
}

console.log(`ctxflow core bench, Node ${process.version}`);
timings();
console.log('\nmemory:');
memoryPerContext();
await millionReleased();
if (sink === -1) console.log(sink);
