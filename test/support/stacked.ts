/**
 * Checks shared by the stacked-layer suites: two ctxflow server layers on one request or call
 * (init() and an explicit adapter, an app-wide and a per-route layer) give one context, one answer
 * at the deadline, one metric sample, and the inner budget where it is tighter.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import type * as grpc from '@grpc/grpc-js';
import type { Context } from '../../sdk/index.ts';
import { current } from '../../sdk/index.ts';
import type { Point } from './metrics.ts';

/** The outer layer's budget: far more than the inner one, so which of the two ended a request shows. */
export const OUTER_MS = 8_000;
/** The inner layer's budget. */
export const INNER_MS = 300;

/** What a handler saw and did; `lateError` is what its answer after the context's end threw, if anything. */
export interface HandlerRecord {
  ctx: Context;
  /** `contextOf(req or call)` was the handler's `current()`. */
  sameAsContextOf: boolean;
  remaining: number;
  lateError?: unknown;
  answeredLate?: boolean;
}

/** Records what the handler sees on entry. */
export function enter(records: HandlerRecord[], contextOf: () => Context | undefined): HandlerRecord {
  const ctx = current();
  const record: HandlerRecord = { ctx, sameAsContextOf: contextOf() === ctx, remaining: ctx.remaining() };
  records.push(record);
  return record;
}

/** Resolves when the handler's context ends. */
export function ended(ctx: Context): Promise<void> {
  return new Promise((resolve) => ctx.onDone(() => resolve()));
}

export interface HttpAnswer {
  status: number;
  reason: string | undefined;
  body: string;
  elapsedMs: number;
}

/** A GET on loopback with node:http (no ctxflow on the client side). */
export function get(url: string, headers: http.OutgoingHttpHeaders = {}): Promise<HttpAnswer> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    http
      .get(url, { headers }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          body += chunk;
        });
        res.on('end', () =>
          resolve({
            status: res.statusCode as number,
            reason: res.headers['ctx-cancel-reason'] as string | undefined,
            body,
            elapsedMs: Date.now() - started,
          }),
        );
      })
      .on('error', reject);
  });
}

/** The sum of an instrument's data points (a histogram's counts), over those matching `where`. */
export async function total(
  points: (name: string) => Promise<Point[]>,
  name: string,
  where: (attributes: Point['attributes']) => boolean = () => true,
): Promise<number> {
  return (await points(name)).filter((p) => where(p.attributes)).reduce((sum, p) => sum + p.value, 0);
}

/** Polls `read` until it gives `expected` (at most 3 s: a sample is recorded as the response closes). */
export async function settles(read: () => Promise<number>, expected: number, what: string): Promise<void> {
  let value = await read();
  for (let i = 0; i < 60 && value !== expected; i++) {
    await new Promise((resolve) => setTimeout(resolve, 50));
    value = await read();
  }
  assert.equal(value, expected, what);
}

/**
 * The HTTP checks of a stacked server whose `/inner` route has the inner budget and `/loose` a
 * looser inner budget than the caller's; both answer `{ remaining }`, or, with `?wait`, wait for
 * the context's end and then try to answer anyway (recorded).
 */
export async function checkHttp(
  url: string,
  records: HandlerRecord[],
  points: (name: string) => Promise<Point[]>,
  transport = 'http',
): Promise<void> {
  const arrivals = () => total(points, 'ctxflow.budget.arrival', (a) => a['ctxflow.transport'] === transport);
  const ends = () =>
    total(
      points,
      'ctxflow.context.ended',
      (a) => a['ctxflow.transport'] === transport && a['ctxflow.cause'] === 'deadline_exceeded',
    );
  const late = () => total(points, 'ctxflow.outlived', (a) => a['ctxflow.work'] === 'http.response');
  const before = { arrivals: await arrivals(), ends: await ends(), late: await late() };

  // The tighter inner budget is the handler's, in the context contextOf() gives.
  const inner = await get(`${url}/inner`);
  assert.equal(inner.status, 200, inner.body);
  const narrowed = records.at(-1) as HandlerRecord;
  assert.ok(narrowed.sameAsContextOf, 'contextOf() is the handler’s current()');
  assert.ok(narrowed.remaining > 0 && narrowed.remaining <= INNER_MS, `remaining ${narrowed.remaining}`);

  // A looser inner budget changes nothing: the caller's deadline, accepted once, stands.
  const loose = await get(`${url}/loose`, { 'ctx-timeout': '2000' });
  assert.equal(loose.status, 200, loose.body);
  const outer = records.at(-1) as HandlerRecord;
  assert.ok(outer.sameAsContextOf);
  assert.ok(outer.remaining > INNER_MS && outer.remaining <= 2000, `remaining ${outer.remaining}`);

  // At the inner deadline: one 504 with the cause, long before the outer budget; the handler's
  // answer after it is dropped without an error.
  const timedOut = await get(`${url}/inner?wait=1`);
  assert.equal(timedOut.status, 504, timedOut.body);
  assert.equal(timedOut.reason, 'deadline_exceeded');
  assert.ok(timedOut.elapsedMs < OUTER_MS / 2, `answered after ${timedOut.elapsedMs} ms`);
  const waited = records.at(-1) as HandlerRecord;
  await waitUntil(() => waited.answeredLate === true, 'the handler answered after the 504');
  assert.equal(waited.lateError, undefined, `the late answer threw ${String(waited.lateError)}`);

  // One arrival sample per request, one end counted, the late answer counted as outlived work.
  await settles(arrivals, before.arrivals + 3, 'one budget-on-arrival sample per request');
  await settles(ends, before.ends + 1, 'the end counted once');
  await settles(late, before.late + 1, 'the late answer counted once as outlived work');
}

/** Polls `ready` (at most 3 s). */
export async function waitUntil(ready: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 60 && !ready(); i++) await new Promise((resolve) => setTimeout(resolve, 50));
  assert.ok(ready(), what);
}

/** The status of a failed gRPC call and its ctx-cancel-reason. */
export function grpcFailure(error: unknown): { code: number; reason: string | undefined } {
  const e = error as grpc.ServiceError;
  return { code: e.code, reason: e.metadata?.get('ctx-cancel-reason')[0]?.toString() };
}
