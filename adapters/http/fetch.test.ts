import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  background,
  CancelledError,
  current,
  DeadlineExceededError,
  withCancel,
  withTimeout,
} from '../../sdk/index.ts';
import { type Peer, peer, valuesOf } from '../../test/support/http.ts';
import { fetch } from './fetch.ts';

describe('fetch', () => {
  let server: Peer;
  before(async () => {
    server = await peer();
  });
  after(() => server.close());

  const echo = async (init?: Parameters<typeof fetch>[1], input?: string | Request) =>
    (await (await fetch(input ?? `${server.url}/echo`, init)).json()) as string[];

  test('refuses to send under a done context: rejects with its error, no request made', async () => {
    const ctx = withCancel(background());
    ctx.cancel('shutdown');
    const before = server.requests;
    await assert.rejects(fetch(`${server.url}/echo`, { ctx }), (error) => error === ctx.error);
    const expired = withTimeout(background(), 0);
    await assert.rejects(
      expired.run(() => fetch(`${server.url}/echo`)),
      (error) => error instanceof DeadlineExceededError,
    );
    assert.equal(server.requests, before);
  });

  test('sends the remaining budget less the reserve; the absolute deadline only when asked', async () => {
    const ctx = withTimeout(background(), 1_000);
    try {
      let left = ctx.remaining();
      const raw = await ctx.run(() => echo());
      const timeout = Number(valuesOf(raw, 'ctx-timeout')[0]);
      assert.ok(timeout <= left - 5 && timeout >= left - 5 - 50, `ctx-timeout ${timeout}, ${left} left`);
      assert.deepEqual(valuesOf(raw, 'ctx-deadline'), []);
      const absolute = await echo({ ctx, sendDeadline: true });
      assert.deepEqual(valuesOf(absolute, 'ctx-deadline'), [String((ctx.deadline as number) - 5)]);
      left = ctx.remaining();
      const reserved = await echo({ ctx, reserveMs: 100 });
      const reservedTimeout = Number(valuesOf(reserved, 'ctx-timeout')[0]);
      assert.ok(
        reservedTimeout <= left - 100 && reservedTimeout >= left - 100 - 50,
        `ctx-timeout ${reservedTimeout}`,
      );
      // No deadline, no budget headers.
      const none = await echo({ ctx: background() });
      assert.deepEqual(valuesOf(none, 'ctx-timeout'), []);
      assert.deepEqual(valuesOf(none, 'ctx-deadline'), []);
    } finally {
      ctx.cancel();
    }
  });

  test('also writes grpc-timeout and connect-timeout-ms with the same budget when asked, only then', async () => {
    const ctx = withTimeout(background(), 1_000);
    try {
      assert.deepEqual(valuesOf(await echo({ ctx }), 'grpc-timeout'), []);
      const left = ctx.remaining();
      const raw = await echo({ ctx, alsoSend: ['grpc-timeout', 'connect-timeout-ms'], reserveMs: 20 });
      const [grpc] = valuesOf(raw, 'grpc-timeout');
      const [connect] = valuesOf(raw, 'connect-timeout-ms');
      assert.match(grpc ?? '', /^[0-9]+m$/);
      assert.equal(grpc, `${connect}m`);
      assert.ok(
        Number(connect) <= left - 20 && Number(connect) >= left - 20 - 50,
        `connect-timeout-ms ${connect}`,
      );
      assert.ok(Number(connect) <= Number(valuesOf(raw, 'ctx-timeout')[0]));
      // A shorter timeout the caller set (a Connect transport over this fetch) is kept.
      const own = await echo({
        ctx,
        alsoSend: ['connect-timeout-ms'],
        headers: { 'Connect-Timeout-Ms': '40' },
      });
      assert.deepEqual(valuesOf(own, 'connect-timeout-ms'), ['40']);
      // No deadline, nothing to write.
      const none = await echo({ ctx: background(), alsoSend: ['grpc-timeout'] });
      assert.deepEqual(valuesOf(none, 'grpc-timeout'), []);
    } finally {
      ctx.cancel();
    }
  });

  test("replaces the caller's budget headers instead of repeating them, keeps its other headers", async () => {
    const ctx = withTimeout(background(), 500);
    try {
      const raw = await echo({ ctx, headers: { 'ctx-timeout': '99999', 'x-mine': 'yes' } });
      assert.equal(valuesOf(raw, 'ctx-timeout').length, 1);
      assert.ok(Number(valuesOf(raw, 'ctx-timeout')[0]) <= 495);
      assert.deepEqual(valuesOf(raw, 'x-mine'), ['yes']);
      const fromRequest = await echo(
        { ctx },
        new Request(`${server.url}/echo`, { headers: { 'x-from-request': '1' } }),
      );
      assert.deepEqual(valuesOf(fromRequest, 'x-from-request'), ['1']);
      assert.equal(valuesOf(fromRequest, 'ctx-timeout').length, 1);
    } finally {
      ctx.cancel();
    }
  });

  test('aborts in flight when the context is cancelled, rejecting with its error; the server sees the close', async () => {
    const ctx = withCancel(background());
    const closed = server.closed;
    const pending = fetch(`${server.url}/hang`, { ctx });
    setTimeout(() => ctx.cancel({ code: 'upstream_cancelled', message: 'caller left' }), 20);
    await assert.rejects(pending, (error) => error === ctx.error && error instanceof CancelledError);
    while (server.closed === closed) await new Promise((resolve) => setTimeout(resolve, 2));
  });

  test('aborts at the deadline with DeadlineExceededError', async () => {
    const ctx = withTimeout(background(), 40);
    const started = Date.now();
    await assert.rejects(
      ctx.run(() => fetch(`${server.url}/hang`)),
      (error) => error instanceof DeadlineExceededError,
    );
    assert.ok(Date.now() - started < 1000);
  });

  test("the caller's signal aborts with its own reason and leaves the context alive", async () => {
    const ctx = withTimeout(background(), 5_000);
    try {
      const mine = new AbortController();
      const reason = new Error('mine');
      const pending = fetch(`${server.url}/hang`, { ctx, signal: mine.signal });
      setTimeout(() => mine.abort(reason), 10);
      await assert.rejects(pending, (error) => error === reason);
      assert.equal(ctx.done, false);
      await assert.rejects(
        fetch(`${server.url}/echo`, { ctx, signal: mine.signal }),
        (error) => error === reason,
      );
    } finally {
      ctx.cancel();
    }
  });

  test('a 504 / 503 / 499 carrying ctx-cancel-reason becomes the typed error; without it the response is returned', async () => {
    const cases: [string, (error: unknown) => boolean][] = [
      [
        'code=504&reason=deadline_exceeded',
        (e) => e instanceof DeadlineExceededError && e.cause.code === 'deadline_exceeded',
      ],
      [
        'code=499&reason=upstream_cancelled%20caller%20left',
        (e) =>
          e instanceof CancelledError &&
          e.cause.code === 'upstream_cancelled' &&
          e.cause.message === 'caller left',
      ],
      ['code=503&reason=shutdown', (e) => e instanceof CancelledError && e.cause.code === 'shutdown'],
      // An unreadable reason still says the callee's context ended: the status tells which way.
      ['code=504&reason=%3Cscript%3E', (e) => e instanceof DeadlineExceededError],
    ];
    for (const [query, check] of cases) {
      await assert.rejects(fetch(`${server.url}/status?${query}`), check, query);
    }
    for (const query of ['code=504', 'code=500&reason=error', 'code=200&reason=deadline_exceeded']) {
      const answer = await fetch(`${server.url}/status?${query}`);
      assert.equal(answer.status, Number(new URLSearchParams(query).get('code')));
      await answer.text();
    }
  });

  test('runs under the explicit context, whatever is current', async () => {
    const outer = withTimeout(background(), 10_000);
    const inner = withTimeout(background(), 300);
    try {
      const raw = await outer.run(() => {
        assert.equal(current(), outer);
        return echo({ ctx: inner });
      });
      assert.ok(Number(valuesOf(raw, 'ctx-timeout')[0]) <= 295);
    } finally {
      outer.cancel();
      inner.cancel();
    }
  });
});
