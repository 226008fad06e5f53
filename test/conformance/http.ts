/**
 * What every way of wiring an HTTP service owes its requests, run once per wiring (the explicit
 * `deadlines()` + `ctxflow/fetch`, and `init()` on an unchanged express app with the global fetch):
 * the budget on arrival below the caller's, 504 with the cause at the deadline, the caller going
 * away reaching the next hop as `upstream_cancelled`, shedding, the late answer, one metric sample.
 */
import assert from 'node:assert/strict';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { describe, test } from 'node:test';
import type { Context } from '../../sdk/index.ts';
import { current } from '../../sdk/index.ts';
import type { Listening } from '../support/http.ts';
import type { Point } from '../support/metrics.ts';
import { ended, get, settles, total } from '../support/stacked.ts';

/** The service's own budget in every wiring. */
export const BUDGET_MS = 400;

/** A handler as the conformance suite writes it: plain node:http, in the request's context. */
export type Handler = (req: IncomingMessage, res: ServerResponse) => Promise<void>;

/** One way of wiring a service: how it serves a handler, and how its handlers call another hop. */
export interface HttpWiring {
  readonly name: string;
  /** Serves `handler` for every request, with the service budget BUDGET_MS. */
  serve(handler: Handler): Promise<Listening>;
  /** The fetch a handler uses to call the next hop (carrying what is left, aborted with the request). */
  readonly fetch: (url: string) => Promise<Response>;
  /** The wiring's metrics. */
  readonly points: (name: string) => Promise<Point[]>;
}

/** Runs the HTTP conformance suite against `wiring`. */
export function httpConformance(wiring: HttpWiring): void {
  const arrivals = () =>
    total(wiring.points, 'ctxflow.budget.arrival', (a) => a['ctxflow.transport'] === 'http');

  describe(`HTTP conformance: ${wiring.name}`, () => {
    test('the budget on arrival is the caller’s, shrunk; the next hop gets less; one sample per request', async () => {
      const next: Context[] = [];
      const b = await wiring.serve(async (_req, res) => {
        next.push(current());
        res.end('b');
      });
      let sentFrom = 0;
      const a = await wiring.serve(async (_req, res) => {
        sentFrom = current().remaining();
        res.end(await (await wiring.fetch(b.url)).text());
      });
      try {
        const before = await arrivals();
        const answer = await get(a.url, { 'ctx-timeout': '300' });
        assert.deepEqual([answer.status, answer.body], [200, 'b']);
        assert.ok(sentFrom > 0 && sentFrom <= 300, `A had ${sentFrom}`);
        const atB = next[0]?.remaining() ?? -1;
        assert.ok(atB < sentFrom, `B got ${atB}, A had ${sentFrom}: never more`);
        await settles(arrivals, before + 2, 'one arrival sample per request and hop');
      } finally {
        await Promise.all([a.close(), b.close()]);
      }
    });

    test('at the deadline: 504 with ctx-cancel-reason deadline_exceeded, the handler’s context ended so', async () => {
      let ctx: Context | undefined;
      const server = await wiring.serve(async () => {
        ctx = current();
        await ended(ctx);
      });
      try {
        const answer = await get(server.url);
        assert.deepEqual([answer.status, answer.reason], [504, 'deadline_exceeded']);
        assert.equal(ctx?.cause?.code, 'deadline_exceeded');
      } finally {
        await server.close();
      }
    });

    test('the caller goes away: the next hop’s context ends with upstream_cancelled', async () => {
      let downstream: Context | undefined;
      const b = await wiring.serve(async () => {
        downstream = current();
        await ended(downstream);
      });
      let upstream: Context | undefined;
      const a = await wiring.serve(async (_req, res) => {
        upstream = current();
        try {
          await wiring.fetch(b.url);
        } catch {
          // Aborted with the request: what the caller's leaving does.
        }
        res.end();
      });
      try {
        const controller = new AbortController();
        const request = globalThis
          .fetch(a.url, { signal: controller.signal, headers: { 'ctx-timeout': '5000' } })
          .catch(() => undefined);
        await waitFor(() => downstream !== undefined, 'the request reached B');
        controller.abort();
        await request;
        await waitFor(() => downstream?.done === true, 'B’s context ended');
        assert.equal(upstream?.cause?.code, 'upstream_cancelled', 'A: its caller, a ctxflow-style hop, left');
        assert.equal(downstream?.cause?.code, 'upstream_cancelled');
      } finally {
        await Promise.all([a.close(), b.close()]);
      }
    });

    test('shedding: a request with less than the minimum left gets 504 without running the handler', async () => {
      let ran = 0;
      const server = await wiring.serve(async (_req, res) => {
        ran++;
        res.end();
      });
      try {
        const answer = await get(server.url, { 'ctx-timeout': '2' });
        assert.equal(answer.status, 504);
        assert.equal(answer.reason, 'deadline_exceeded budget below minimum');
        assert.equal(ran, 0);
        const shed = await total(
          wiring.points,
          'ctxflow.request.shed',
          (a) => a['ctxflow.transport'] === 'http',
        );
        assert.ok(shed >= 1, `shed counted ${shed}`);
      } finally {
        await server.close();
      }
    });

    test('a late answer is dropped, not sent and not thrown, and counted as outlived work', async () => {
      let lateError: unknown;
      let answeredLate = false;
      const server = await wiring.serve(async (_req, res) => {
        await ended(current());
        await new Promise((resolve) => setImmediate(resolve));
        try {
          res.writeHead(200, { 'content-type': 'text/plain' });
          res.end('late');
        } catch (error) {
          lateError = error;
        }
        answeredLate = true;
      });
      const late = () =>
        total(wiring.points, 'ctxflow.outlived', (a) => a['ctxflow.work'] === 'http.response');
      try {
        const before = await late();
        const answer = await get(server.url, { 'ctx-timeout': '100' });
        assert.deepEqual([answer.status, answer.body], [504, 'deadline_exceeded']);
        await waitFor(() => answeredLate, 'the handler answered late');
        assert.equal(lateError, undefined);
        await settles(late, before + 1, 'the late answer counted once');
      } finally {
        await server.close();
      }
    });
  });
}

async function waitFor(ready: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 100 && !ready(); i++) await new Promise((resolve) => setTimeout(resolve, 30));
  assert.ok(ready(), what);
}
