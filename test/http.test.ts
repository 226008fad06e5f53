import assert from 'node:assert/strict';
import { getEventListeners } from 'node:events';
import { after, before, describe, test } from 'node:test';
import express from 'express';
import { deadlines, errorHandler } from '../adapters/http/express.ts';
import { fetch } from '../adapters/http/fetch.ts';
import type { Cause } from '../sdk/cause.ts';
import { background, current, withTimeout } from '../sdk/context.ts';
import { DEFAULT_RESERVE_MS } from '../sdk/wire.ts';
import { type Hop, hop, listen, relayTo, type Seen, slow } from './support/http.ts';

const RESERVE = DEFAULT_RESERVE_MS;

/** Rejects if `promise` takes longer than `ms`. */
function within<T>(ms: number, promise: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function last(h: Hop): Seen {
  const seen = h.seen.at(-1);
  assert.ok(seen, 'the hop saw a request');
  return seen;
}

describe('three hops A -> B -> C', () => {
  let a: Hop;
  let b: Hop;
  let c: Hop;
  let cBehaviour: 'fast' | 'slow' = 'fast';

  before(async () => {
    c = await hop({}, async (ctx, seen, req, res) => {
      if (cBehaviour === 'fast') {
        res.send('ok');
        return;
      }
      await slow(10_000)(ctx, seen, req, res);
    });
    b = await hop(
      {},
      relayTo(() => c.url),
    );
    a = await hop(
      { budgetMs: 1_000 },
      relayTo(() => b.url),
    );
  });

  after(async () => {
    await Promise.all([a.close(), b.close(), c.close()]);
  });

  test('each hop sees the root budget less elapsed time and one reserve per hop, never more than its parent', async () => {
    cBehaviour = 'fast';
    for (let i = 0; i < 20; i++) {
      const answer = await globalThis.fetch(`${a.url}/work`);
      assert.equal(answer.status, 200);
      assert.equal(await answer.text(), 'ok');
      const [sa, sb, sc] = [last(a), last(b), last(c)];
      assert.ok(sa.deadline !== undefined && sb.deadline !== undefined && sc.deadline !== undefined);
      assert.ok(sa.sentRemaining !== undefined && sb.sentRemaining !== undefined);
      assert.ok(sa.remaining <= 1_000 && sa.remaining > 900, `A: ${sa.remaining}`);
      // What a hop sees: what its caller had left when sending (the root budget less the time
      // spent at the hops before), less one reserve; the time in transit is not counted.
      for (const [name, parent, child] of [
        ['B', sa, sb],
        ['C', sb, sc],
      ] as const) {
        const granted = (parent.sentRemaining as number) - RESERVE;
        assert.ok(child.remaining <= granted, `${name}: ${child.remaining} > ${granted}`);
        // Less the time from the caller's send to this handler (about 1 ms; more when a loaded
        // machine preempts a process between reading the clock and writing the header).
        const between = child.arrivedAt - (parent.sentAt as number);
        assert.ok(
          child.remaining >= granted - between - 5,
          `${name}: ${child.remaining} vs ${granted}, ${between} ms after the send`,
        );
        // In absolute time too, unless the send took longer than the reserve (a cold connection).
        if (between < RESERVE) {
          assert.ok(
            (child.deadline as number) <= (parent.deadline as number),
            `${name}'s deadline after its parent's`,
          );
        }
      }
      // A finished response releases every hop's context.
      for (const seen of [sa, sb, sc]) assert.equal((await seen.ended).code, 'cancelled');
    }
  });

  test('C slow past the deadline: C, B and A end with deadline_exceeded, the client gets 504 with the reason', async () => {
    cBehaviour = 'slow';
    const started = Date.now();
    const answer = await globalThis.fetch(`${a.url}/work`, { headers: { 'ctx-timeout': '300' } });
    const elapsed = Date.now() - started;
    assert.equal(answer.status, 504);
    assert.equal(answer.headers.get('ctx-cancel-reason'), 'deadline_exceeded');
    await answer.text();
    assert.ok(elapsed >= 290 && elapsed < 800, `answered after ${elapsed} ms`);
    const [sa, sb, sc] = [last(a), last(b), last(c)];
    for (const [name, seen] of [
      ['A', sa],
      ['B', sb],
      ['C', sc],
    ] as const) {
      const cause = await within(1_000, seen.ended, name);
      assert.equal(cause.code, 'deadline_exceeded', `${name} ended with ${cause.code}`);
    }
    assert.equal(sc.signalAborted, true, "C's handler saw its signal abort");
  });

  for (const disconnect of ['close', 'signal'] as const) {
    test(`client aborts at A (disconnect: ${disconnect}): every hop is cancelled, C's signal aborts`, async () => {
      const hops = await chainWith(disconnect);
      try {
        const [ha, hb, hc] = hops;
        const arrived = hc.arrival();
        const client = new AbortController();
        const pending = globalThis.fetch(`${ha.url}/work`, { signal: client.signal }).then(
          () => assert.fail('the request should have been aborted'),
          (error: unknown) => error,
        );
        const seenC = await within(2_000, arrived, 'C reached');
        client.abort();
        await pending;
        const causes: Cause[] = await within(
          2_000,
          Promise.all([last(ha).ended, last(hb).ended, seenC.ended]),
          'contexts ended',
        );
        assert.deepEqual(
          causes.map((cause) => cause.code),
          ['client_disconnected', 'upstream_cancelled', 'upstream_cancelled'],
        );
        assert.equal(seenC.signalAborted, true);
      } finally {
        await Promise.all(hops.map((h) => h.close()));
      }
    });
  }
});

async function chainWith(disconnect: 'close' | 'signal'): Promise<[Hop, Hop, Hop]> {
  const c = await hop({ disconnect }, slow(10_000));
  const b = await hop(
    { disconnect },
    relayTo(() => c.url),
  );
  const a = await hop(
    { disconnect, budgetMs: 5_000 },
    relayTo(() => b.url),
  );
  return [a, b, c];
}

test('10,000 sequential fetches under one context leave its signal and the caller signal with constant listeners', async () => {
  const app = express();
  app.get('/', (_req, res) => {
    res.send('.');
  });
  const server = await listen(app);
  const ctx = withTimeout(background(), 120_000);
  const caller = new AbortController();
  try {
    const before = getEventListeners(ctx.signal, 'abort').length;
    const beforeCaller = getEventListeners(caller.signal, 'abort').length;
    await ctx.run(async () => {
      for (let i = 0; i < 10_000; i++) {
        const answer = await fetch(`${server.url}/`, i % 2 === 0 ? {} : { signal: caller.signal });
        await answer.arrayBuffer();
        if (i % 2_500 === 0) {
          assert.equal(getEventListeners(ctx.signal, 'abort').length, before);
          assert.equal(getEventListeners(caller.signal, 'abort').length, beforeCaller);
        }
      }
    });
    assert.equal(getEventListeners(ctx.signal, 'abort').length, before);
    assert.equal(getEventListeners(caller.signal, 'abort').length, beforeCaller);
    assert.equal(ctx.done, false);
  } finally {
    ctx.cancel();
    await server.close();
  }
});

describe('handler errors and shedding', () => {
  let server: Awaited<ReturnType<typeof listen>>;
  const causes: Cause[] = [];
  let ran = 0;

  before(async () => {
    const app = express();
    app.use(deadlines({ budgetMs: 2_000, minBudgetMs: 20 }));
    app.use((_req, _res, next) => {
      ran++;
      current().onDone((error) => causes.push(error.cause));
      next();
    });
    app.get('/throw', () => {
      throw new Error('boom');
    });
    app.get('/reject', async () => {
      await Promise.resolve();
      throw new Error('boom later');
    });
    app.get('/ok', (_req, res) => {
      res.send('ok');
    });
    app.use(errorHandler({ onError: () => {} }));
    server = await listen(app);
  });

  after(() => server.close());

  test('a thrown or rejected error answers 500, cancels the context with cause error, and the server lives on', async () => {
    for (const path of ['/throw', '/reject']) {
      causes.length = 0;
      const answer = await globalThis.fetch(`${server.url}${path}`);
      assert.equal(answer.status, 500);
      await answer.text();
      assert.deepEqual(
        causes.map((cause) => cause.code),
        ['error'],
      );
    }
    const ok = await globalThis.fetch(`${server.url}/ok`);
    assert.equal(ok.status, 200);
    assert.equal(await ok.text(), 'ok');
  });

  test('a request arriving with less than minBudgetMs left is answered 504 at once, without running the handler', async () => {
    const before = ran;
    const answer = await globalThis.fetch(`${server.url}/ok`, { headers: { 'ctx-timeout': '10' } });
    assert.equal(answer.status, 504);
    assert.match(answer.headers.get('ctx-cancel-reason') ?? '', /^deadline_exceeded/);
    await answer.text();
    assert.equal(ran, before, 'no handler ran');
    const enough = await globalThis.fetch(`${server.url}/ok`, { headers: { 'ctx-timeout': '5000' } });
    assert.equal(enough.status, 200);
    await enough.text();
  });
});
