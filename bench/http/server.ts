// One hop of the bench chain, in its own process. BENCH_ROLE=A calls BENCH_NEXT; BENCH_ROLE=B answers.
// BENCH_CTXFLOW=1 adds the ctxflow middleware and fetch; BENCH_HEADERS=1 has A send by hand what
// ctxflow's fetch sends (ctx-timeout and a fresh traceparent), also beside the ctxflow middleware
// with BENCH_FETCH_BY_HAND=1; BENCH_ALS=1 runs each request in an OpenTelemetry context of its own
// (AsyncLocalStorage), as any context propagation must. Reports its port over IPC when listening.
import type { AddressInfo } from 'node:net';
import { createContextKey, context as otel } from '@opentelemetry/api';
import { deadlines, errorHandler } from 'ctxflow/express';
import { fetch as ctxFetch } from 'ctxflow/fetch';
import { ensureContextManager } from 'ctxflow/wire';
import express from 'express';
import { traceparent } from '../support/traceparent.ts';

const role = process.env.BENCH_ROLE ?? 'B';
const next = process.env.BENCH_NEXT;
const withCtxflow = process.env.BENCH_CTXFLOW === '1';
const byHand = process.env.BENCH_HEADERS === '1';
const ownContext = process.env.BENCH_ALS === '1';
const ctxflowFetch = withCtxflow && process.env.BENCH_FETCH_BY_HAND !== '1';

const send: (url: string) => Promise<Response> = ctxflowFetch
  ? ctxFetch
  : byHand
    ? (url) => globalThis.fetch(url, { headers: { 'ctx-timeout': '9995', traceparent: traceparent() } })
    : globalThis.fetch;

const app = express();
app.disable('x-powered-by');
app.disable('etag');
if (withCtxflow) app.use(deadlines({ budgetMs: 10_000 }));
if (ownContext) {
  ensureContextManager();
  const requestKey = createContextKey('bench.request');
  app.use((_req, _res, next) => otel.with(otel.active().setValue(requestKey, { at: Date.now() }), next));
}
if (role === 'A') {
  app.get('/', async (_req, res) => {
    const answer = await send(`${next}/`);
    const body = (await answer.json()) as { hop: string };
    res.json({ hop: 'A', next: body.hop });
  });
} else {
  app.get('/', (_req, res) => {
    res.json({ hop: 'B' });
  });
}
if (withCtxflow) app.use(errorHandler());

const server = app.listen(0, '127.0.0.1', () => {
  process.send?.({ port: (server.address() as AddressInfo).port });
});
server.keepAliveTimeout = 60_000;

process.on('message', (message: { type: string }) => {
  if (message.type === 'spans') {
    const count = (globalThis as { benchExportedSpans?: () => number }).benchExportedSpans?.() ?? 0;
    process.send?.({ spans: count });
  }
});
process.on('disconnect', () => process.exit(0));
