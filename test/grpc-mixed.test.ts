/**
 * Mixed chain: HTTP client → express A (`deadlines()`) → gRPC B (`serverInterceptor`) → express C,
 * A calling B with a `clientOptions()` client, B calling C with the ctxflow `fetch`. One context
 * crosses both transports: budgets shrink, a deadline and a cancel reach every hop.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type * as grpc from '@grpc/grpc-js';
import express from 'express';
import { deadlines, errorHandler } from '../adapters/http/express.ts';
import { fetch } from '../adapters/http/fetch.ts';
import {
  deferred,
  type HandlerHop,
  type Message,
  probeClient,
  ready,
  recordHop,
  startProbeServer,
  type TestServer,
  unary,
} from './support/grpc.ts';
import { type Listening, listen } from './support/http.ts';

describe('mixed chain: HTTP → gRPC → HTTP', () => {
  let hops: HandlerHop[] = [];
  let cStarted = deferred<void>();
  let a: Listening;
  let c: Listening;
  let b: TestServer;
  let toB: ReturnType<typeof probeClient>;

  const record = (name: string): HandlerHop => recordHop(hops, name);

  function reset(): void {
    hops = [];
    cStarted = deferred<void>();
  }

  before(async () => {
    const appC = express();
    appC.use(deadlines());
    appC.get('/work', async (req, res) => {
      const hop = record('C');
      cStarted.resolve();
      if (req.query.mode === 'hang') {
        // deadlines() answers 504 (or notices the caller is gone) when the context ends.
        await new Promise((resolve) => hop.signal.addEventListener('abort', resolve));
        return;
      }
      res.json({ at: 'C' });
    });
    appC.use(errorHandler({ onError: () => {} }));
    c = await listen(appC);

    b = await startProbeServer({
      unary: async (call: grpc.ServerUnaryCall<Message, Message>) => {
        record('B');
        const answer = await fetch(`${c.url}/work?mode=${call.request.mode ?? 'fast'}`);
        return { c: await answer.json() };
      },
    });
    toB = probeClient(b.address);
    await ready(toB);

    const appA = express();
    appA.use(deadlines({ budgetMs: 1000, trustInbound: false }));
    appA.get('/work', async (req, res) => {
      record('A');
      const answer = await unary(toB, { mode: req.query.mode });
      res.json(answer);
    });
    appA.use(errorHandler({ onError: () => {} }));
    a = await listen(appA);

    for (let i = 0; i < 20; i++) await (await globalThis.fetch(`${a.url}/work`)).text();
  });

  after(async () => {
    toB.close();
    await Promise.all([a.close(), b.close(), c.close()]);
  });

  test('budgets shrink by the reserve at each hop across both transports', async () => {
    reset();
    const answer = await globalThis.fetch(`${a.url}/work`);
    assert.equal(answer.status, 200);
    assert.deepEqual(await answer.json(), { c: { at: 'C' } });
    assert.deepEqual(
      hops.map((h) => h.name),
      ['A', 'B', 'C'],
    );
    const [ha, hb, hc] = hops as [HandlerHop, HandlerHop, HandlerHop];
    const rootDeadline = ha.deadline as number;
    assert.ok(rootDeadline - ha.at <= 1000 && rootDeadline - ha.at >= 995);
    // Each caller sends as its handler starts, so a hop's budget is what its caller had left at
    // that moment less one reserve; time in transit is not counted.
    for (const [hop, parent] of [
      [hb, ha],
      [hc, hb],
    ] as const) {
      const deadline = hop.deadline as number;
      const remaining = deadline - hop.at;
      const granted = (parent.deadline as number) - parent.at - 5;
      const between = hop.at - parent.at;
      assert.ok(remaining <= granted, `${hop.name}: ${remaining} ms left, more than the ${granted} granted`);
      assert.ok(
        remaining >= granted - between - 5,
        `${hop.name}: ${remaining} ms left of ${granted}, ${between} ms after the send`,
      );
      // In absolute time too, unless the send took longer than the reserve (a loaded machine).
      if (between < 5)
        assert.ok(deadline <= (parent.deadline as number), `${hop.name} ends before ${parent.name}`);
    }
  });

  test('a slow C: the hops end at their deadlines, the client gets 504 with the reason', async () => {
    reset();
    const started = Date.now();
    const answer = await globalThis.fetch(`${a.url}/work?mode=hang`);
    const elapsed = Date.now() - started;
    assert.equal(answer.status, 504);
    assert.equal(answer.headers.get('ctx-cancel-reason'), 'deadline_exceeded');
    assert.ok(elapsed >= 980 && elapsed < 1600, `answered after ${elapsed} ms`);
    // Each hop's deadline is counted from its own arrival: on a loaded machine a later hop's may
    // fall after A's answer. Wait for each end rather than race the timers.
    await Promise.all(hops.map((h) => new Promise((resolve) => h.ctx.onDone(resolve))));
    const [ha, hb, hc] = hops as [HandlerHop, HandlerHop, HandlerHop];
    // A's call to B carries A's deadline less the reserve, and A's grpc-js cancels it then. B counts
    // that cancel as its deadline when it arrives within 5 ms of B's own; C's context, whose end is
    // judged by the clock first, ends by its deadline when no cancel can come before it. Each hop's
    // deadline is counted from its arrival, so when a send took more than the reserve (a loaded
    // machine) a cancel from upstream may come first, and is then the caller's: which one it is
    // depends on the timing, not on ctxflow.
    const callDeadline = (ha.deadline as number) - 5;
    const bDeadline = hb.deadline as number;
    const allowed = (certain: boolean) =>
      certain ? ['deadline_exceeded'] : ['deadline_exceeded', 'upstream_cancelled'];
    const expected = {
      A: ['deadline_exceeded'],
      B: allowed(bDeadline - 5 <= callDeadline),
      C: allowed((hc.deadline as number) <= Math.min(bDeadline, callDeadline)),
    };
    for (const hop of hops) {
      const allowedCauses = expected[hop.name as keyof typeof expected];
      assert.ok(
        allowedCauses.includes(hop.ctx.cause?.code as string),
        `${hop.name} ended with ${hop.ctx.cause?.code}; deadlines after A's call's: B ${bDeadline - callDeadline} ms, C ${(hc.deadline as number) - callDeadline} ms`,
      );
      assert.equal(hop.signal.aborted, true, `${hop.name}'s signal aborted`);
    }
    assert.deepEqual(
      hops.map((h) => h.name),
      ['A', 'B', 'C'],
    );
  });

  test('a client hanging up reaches C through gRPC: A client_disconnected, B and C upstream_cancelled', async () => {
    reset();
    const controller = new AbortController();
    const pending = globalThis
      .fetch(`${a.url}/work?mode=hang`, { signal: controller.signal })
      .catch((e) => e);
    await cStarted.promise;
    const cHop = hops.find((h) => h.name === 'C') as HandlerHop;
    const cAborted = new Promise<void>((resolve) => cHop.signal.addEventListener('abort', () => resolve()));
    controller.abort();
    assert.equal(((await pending) as Error).name, 'AbortError');
    await cAborted;
    assert.deepEqual(
      hops.map((h) => [h.name, h.ctx.cause?.code, h.signal.aborted]),
      [
        ['A', 'client_disconnected', true],
        ['B', 'upstream_cancelled', true],
        ['C', 'upstream_cancelled', true],
      ],
    );
  });
});
