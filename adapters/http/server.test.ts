import assert from 'node:assert/strict';
import { once } from 'node:events';
import http from 'node:http';
import { test } from 'node:test';
import { CancelledError, type Context, current } from '../../sdk/index.ts';
import { listen, sleep } from '../../test/support/http.ts';
import { contextOf, withDeadlines } from './server.ts';

test('withDeadlines gives a plain node:http handler its context, its budget and its answers', async () => {
  const seen: Context[] = [];
  const errors: unknown[] = [];
  const server = await listen(
    withDeadlines(
      async (req, res) => {
        const ctx = current();
        seen.push(ctx);
        assert.equal(contextOf(req), ctx);
        if (req.url === '/ok') res.end(String(ctx.deadline));
        else if (req.url === '/throw') throw new Error('boom');
        else if (req.url === '/cause') throw new CancelledError({ code: 'out_of_stock' });
        else await sleep(5_000);
      },
      { budgetMs: 200, onError: (error) => errors.push(error) },
    ),
  );
  try {
    // The caller's 100 ms, not the 200 ms of budgetMs: the deadline is the arrival plus 100, and the
    // arrival lies between the two readings of the clock around the request (judged by the clock,
    // not by what was left when the handler ran, which a busy machine shrinks).
    const before = Date.now();
    const ok = await globalThis.fetch(`${server.url}/ok`, { headers: { 'ctx-timeout': '100' } });
    const deadline = Number(await ok.text());
    const after = Date.now();
    assert.ok(
      deadline >= before + 100 && deadline <= after + 100,
      `deadline ${deadline - before} ms after the request was sent, answered after ${after - before} ms`,
    );
    assert.equal(seen.at(-1)?.cause?.code, 'cancelled', 'the context ends with the response');

    const thrown = await globalThis.fetch(`${server.url}/throw`);
    assert.equal(thrown.status, 500);
    assert.equal(seen.at(-1)?.cause?.code, 'error');
    assert.equal((errors[0] as Error).message, 'boom');

    const cause = await globalThis.fetch(`${server.url}/cause`);
    assert.equal(cause.status, 499);
    assert.equal(cause.headers.get('ctx-cancel-reason'), 'out_of_stock');

    const late = await globalThis.fetch(`${server.url}/hang`);
    assert.equal(late.status, 504);
    assert.equal(late.headers.get('ctx-cancel-reason'), 'deadline_exceeded');
    assert.equal(errors.length, 1, 'context ends are not reported as errors');
  } finally {
    await server.close();
  }
});

test('requests kept alive on one connection leave no listener behind, and a hang-up still ends the one in flight', async () => {
  const closeListeners: number[] = [];
  const hung = Promise.withResolvers<Context>();
  const server = await listen(
    withDeadlines((req, res) => {
      closeListeners.push(req.socket.listenerCount('close'));
      if (req.url === '/hang') hung.resolve(current());
      else res.end('ok');
    }),
  );
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const get = (path: string) =>
    new Promise<http.IncomingMessage>((resolve, reject) => {
      const request = http.get(`${server.url}${path}`, { agent }, resolve);
      request.on('error', reject);
    });
  try {
    for (let i = 0; i < 30; i++) {
      const answer = await get('/ok');
      answer.resume();
      await once(answer, 'end');
    }
    assert.equal(
      new Set(closeListeners).size,
      1,
      `'close' listeners per request: ${closeListeners.join(' ')}`,
    );
    const request = http.get(`${server.url}/hang`, { agent });
    request.on('error', () => {});
    const ctx = await hung.promise;
    assert.equal(closeListeners.at(-1), closeListeners[0], 'the same connection, no listener added');
    request.destroy();
    await once(ctx.signal, 'abort');
    assert.equal(ctx.cause?.code, 'client_disconnected');
  } finally {
    agent.destroy();
    await server.close();
  }
});

test('the response guard is set up once, on the prototype: a response late for its deadline is answered 504, responses of other servers are left alone', async () => {
  const guarded = await listen(
    withDeadlines(
      async (req, res) => {
        // Begun past the deadline by the clock, before its timer can have fired: the guard answers.
        const until = Date.now() + 60;
        while (Date.now() < until) {}
        res.end('from the handler');
        assert.equal(Object.hasOwn(res, 'end'), false, 'nothing put on the response itself');
        assert.equal(Object.hasOwn(res, 'write'), false);
        assert.ok(contextOf(req)?.done);
      },
      { budgetMs: 50 },
    ),
  );
  // A server without ctxflow in the same process, after the guard is in place.
  const plain = await listen((_req, res) => {
    res.write('plain ');
    res.end('answer');
  });
  try {
    const late = await globalThis.fetch(`${guarded.url}/`);
    assert.equal(late.status, 504);
    assert.equal(late.headers.get('ctx-cancel-reason'), 'deadline_exceeded');
    assert.equal(await late.text(), 'deadline_exceeded');

    const answer = await globalThis.fetch(`${plain.url}/`);
    assert.equal(answer.status, 200);
    assert.equal(await answer.text(), 'plain answer');
  } finally {
    await guarded.close();
    await plain.close();
  }
});
