import assert from 'node:assert/strict';
import type { IncomingMessage } from 'node:http';
import { after, before, describe, test } from 'node:test';
import {
  background,
  CancelledError,
  DeadlineExceededError,
  withCancel,
  withTimeout,
} from '../../sdk/index.ts';
import { type Peer, peer, valuesOf } from '../../test/support/http.ts';
import { get, request, responseError } from './client.ts';

function body(res: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    res.setEncoding('utf8');
    res.on('data', (chunk: string) => {
      text += chunk;
    });
    res.on('end', () => resolve(text));
    res.on('error', reject);
  });
}

function answer(make: (callback: (res: IncomingMessage) => void) => void): Promise<IncomingMessage> {
  return new Promise((resolve) => make(resolve));
}

describe('http request', () => {
  let server: Peer;
  before(async () => {
    server = await peer();
  });
  after(() => server.close());

  test('throws the error of a done context at once, without any request', () => {
    const ctx = withCancel(background());
    ctx.cancel('shutdown');
    const before = server.requests;
    assert.throws(
      () => request(`${server.url}/echo`, { ctx }),
      (error) => error === ctx.error,
    );
    assert.equal(server.requests, before);
  });

  test("sends the budget less the reserve, replacing the caller's header of any case", async () => {
    const ctx = withTimeout(background(), 800);
    try {
      const left = ctx.remaining();
      const res = await answer((cb) =>
        get(`${server.url}/echo`, { ctx, headers: { 'CTX-Timeout': '999999', 'x-mine': 'yes' } }, cb),
      );
      const raw = JSON.parse(await body(res)) as string[];
      const timeouts = valuesOf(raw, 'ctx-timeout');
      assert.equal(timeouts.length, 1);
      assert.ok(Number(timeouts[0]) <= left - 5 && Number(timeouts[0]) >= left - 60, `${timeouts[0]}`);
      assert.deepEqual(valuesOf(raw, 'ctx-deadline'), [], 'a synchronous hop needs no absolute deadline');
      assert.deepEqual(valuesOf(raw, 'x-mine'), ['yes']);
      const options = await answer((cb) =>
        request({ ctx, host: '127.0.0.1', port: server.port, path: '/echo', reserveMs: 50 }, cb).end(),
      );
      const timeout = Number(valuesOf(JSON.parse(await body(options)) as string[], 'ctx-timeout')[0]);
      assert.ok(timeout <= left - 50, `${timeout}`);
    } finally {
      ctx.cancel();
    }
  });

  test('also writes grpc-timeout and connect-timeout-ms when asked, replacing a longer one of the caller', async () => {
    const ctx = withTimeout(background(), 800);
    try {
      const left = ctx.remaining();
      const res = await answer((cb) =>
        get(
          `${server.url}/echo`,
          { ctx, alsoSend: ['grpc-timeout', 'connect-timeout-ms'], headers: { 'GRPC-Timeout': '1H' } },
          cb,
        ),
      );
      const raw = JSON.parse(await body(res)) as string[];
      const [connect] = valuesOf(raw, 'connect-timeout-ms');
      assert.deepEqual(valuesOf(raw, 'grpc-timeout'), [`${connect}m`]);
      assert.ok(Number(connect) <= left - 5 && Number(connect) >= left - 60, `${connect}`);
    } finally {
      ctx.cancel();
    }
  });

  test("destroys the request with the context's error when the context ends", async () => {
    for (const [ctx, check] of [
      [withTimeout(background(), 30), (e: unknown) => e instanceof DeadlineExceededError],
      [withCancel(background()), (e: unknown) => e instanceof CancelledError && e.cause.code === 'shutdown'],
    ] as const) {
      const req = request(`${server.url}/hang`, { ctx });
      req.end();
      // Only the context without a deadline is cancelled by hand: a cancel timer due with the
      // deadline would race it.
      if (ctx.deadline === undefined) setTimeout(() => ctx.cancel('shutdown'), 30);
      const error = await new Promise<unknown>((resolve) => req.on('error', resolve));
      assert.ok(check(error), String(error));
      assert.equal(error, ctx.error);
    }
  });

  test('responseError reads a callee context end', async () => {
    const cases: [string, (e: unknown) => boolean][] = [
      ['code=504&reason=deadline_exceeded', (e) => e instanceof DeadlineExceededError],
      ['code=499&reason=client_disconnected', (e) => e instanceof CancelledError],
      ['code=504', (e) => e === undefined],
      ['code=200&reason=deadline_exceeded', (e) => e === undefined],
    ];
    for (const [query, check] of cases) {
      const res = await answer((cb) => get(`${server.url}/status?${query}`, {}, cb));
      await body(res);
      assert.ok(check(responseError(res)), query);
    }
  });
});
