/**
 * Cost of the inbound path (`acceptInbound`) per request, with the foreign deadline headers
 * (grpc-timeout, connect-timeout-ms, x-envoy-expected-rq-timeout-ms) honoured or not, present or
 * not; and the bytes `foreignDeadline` allocates when none is present. Variants are interleaved;
 * each figure is the median of several rounds.
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { TextMapGetter } from '@opentelemetry/api';
import { FOREIGN_HEADERS, foreignDeadline } from '../sdk/foreign.ts';
import { acceptInbound } from '../sdk/inbound.ts';

const gc = globalThis.gc;
if (gc === undefined) throw new Error('run with --expose-gc');

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 9);
const OPS = 200_000;
let sink = 0;

// As express's getter reads node:http's headers.
const getter: TextMapGetter<IncomingHttpHeaders> = {
  get: (carrier, key) => carrier[key],
  keys: (carrier) => Object.keys(carrier),
};

/** What a ctxflow hop sends: the usual headers, a trace parent and a budget. */
const ctxflowCall: IncomingHttpHeaders = {
  host: '127.0.0.1:8080',
  'user-agent': 'node',
  accept: '*/*',
  'accept-encoding': 'gzip, deflate',
  connection: 'keep-alive',
  traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
  'ctx-timeout': '1000',
};
/** What a Connect client sends: no ctxflow header, its own timeout. */
const connectCall: IncomingHttpHeaders = {
  host: '127.0.0.1:8080',
  'user-agent': 'connect-es/2.3.0',
  'content-type': 'application/json',
  'connect-protocol-version': '1',
  'connect-timeout-ms': '1000',
  connection: 'keep-alive',
};

const accept = (headers: IncomingHttpHeaders, options: Parameters<typeof acceptInbound>[2]) => () => {
  const call = acceptInbound(headers, getter, options);
  sink += call.ctx.deadline ?? 0;
  call.ctx.cancel();
};

const NO_FOREIGN = { budgetMs: 10_000, foreignHeaders: [] };
const DEFAULTS = { budgetMs: 10_000 };
const variants: Record<string, () => void> = {
  'ctxflow call, foreign headers off (baseline)': accept(ctxflowCall, NO_FOREIGN),
  'ctxflow call, foreign headers honoured (default)': accept(ctxflowCall, DEFAULTS),
  'ctxflow call, trustInbound: false': accept(ctxflowCall, { budgetMs: 10_000, trustInbound: false }),
  'Connect call, connect-timeout-ms honoured': accept(connectCall, DEFAULTS),
  // The part the default adds on a ctxflow call: three header lookups that find nothing.
  'foreignDeadline alone, no foreign header present': () => {
    if (foreignDeadline(ctxflowCall, getter, FOREIGN_HEADERS, 60_000, 0) !== undefined) sink++;
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
  for (const fn of Object.values(variants)) nsPerOp(fn);
  for (let round = 0; round < ROUNDS; round++) {
    for (const [name, fn] of Object.entries(variants)) samples.get(name)?.push(nsPerOp(fn));
  }
  const baseline = median(samples.get('ctxflow call, foreign headers off (baseline)') ?? []);
  console.log(`\nacceptInbound per request, median of ${ROUNDS} interleaved rounds of ${OPS} (min-max):`);
  for (const [name, xs] of samples) {
    const m = median(xs);
    console.log(
      `  ${name.padEnd(50)} ${m.toFixed(0).padStart(6)} ns  (${Math.min(...xs).toFixed(0)}-${Math.max(...xs).toFixed(0)})  x${(m / baseline).toFixed(3)} of baseline`,
    );
  }
}

/** Heap growth per call of `foreignDeadline` on a ctxflow call's headers (none foreign), without GC in between. */
function bytesPerCall(): number {
  const n = 1_000_000;
  const now = Date.now();
  // A small-integer counter: summing the (epoch ms) results would allocate a heap number each.
  let found = 0;
  for (let i = 0; i < n; i++) if (foreignDeadline(ctxflowCall, getter, FOREIGN_HEADERS, 60_000, now)) found++;
  gc?.();
  const before = process.memoryUsage().heapUsed;
  for (let i = 0; i < n; i++) if (foreignDeadline(ctxflowCall, getter, FOREIGN_HEADERS, 60_000, now)) found++;
  const bytes = (process.memoryUsage().heapUsed - before) / n;
  sink += found;
  return bytes;
}

console.log(`ctxflow inbound bench, Node ${process.version}`);
timings();
console.log(`\nforeignDeadline with no foreign header present: ${bytesPerCall().toFixed(2)} bytes per call`);
if (sink === Number.MIN_VALUE) console.log(sink);
