/**
 * init() with tracing off and frameworks on node:http left unchanged (express 4 and fastify): the
 * handler runs in the caller's budget, the deadline answers 504 with ctx-cancel-reason, and a
 * client that goes away cancels the handler's context.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import http from 'node:http';
import { after, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { init } from '../init/index.ts';

const telemetry = init({ tracing: false });
after(() => telemetry.shutdown());

// Loaded after init(), as the rule says.
const { default: express4 } = (await import('express4' as string)) as {
  default: typeof import('express');
};
const { default: fastify } = await import('fastify');
const { current } = await import('../sdk/context.ts');

/** What the handler saw: its budget on entry and how its context ended. */
interface Seen {
  remaining?: number;
  started?: boolean;
  cause?: string;
}

/** The handler both frameworks mount: `/fast` answers, `/slow` waits for its context's end. */
async function handle(path: string, seen: Seen): Promise<string> {
  const ctx = current();
  seen.remaining = ctx.remaining();
  seen.started = true;
  ctx.onDone((error) => {
    seen.cause = error.cause.code;
  });
  if (path === '/slow') await once(ctx.signal, 'abort');
  return 'ok';
}

function get(url: string, timeout: string): Promise<http.IncomingMessage> {
  return new Promise((resolve, reject) => {
    http
      .get(url, { headers: { 'ctx-timeout': timeout } }, (res) => {
        res.resume();
        res.on('end', () => resolve(res));
      })
      .on('error', reject);
  });
}

async function check(url: string, seen: Seen): Promise<void> {
  const fast = await get(`${url}/fast`, '1000');
  assert.equal(fast.statusCode, 200);
  assert.ok(
    (seen.remaining as number) > 0 && (seen.remaining as number) <= 1000,
    `remaining ${seen.remaining}`,
  );

  const slow = await get(`${url}/slow`, '150');
  assert.equal(slow.statusCode, 504);
  assert.equal(slow.headers['ctx-cancel-reason'], 'deadline_exceeded');

  Object.assign(seen, { started: false, cause: undefined });
  const gone = http.get(`${url}/slow`, { headers: { 'ctx-timeout': '10000' } });
  gone.on('error', () => {});
  for (let i = 0; i < 500 && seen.started !== true; i++) await sleep(10);
  gone.destroy();
  for (let i = 0; i < 500 && seen.cause === undefined; i++) await sleep(10);
  assert.equal(seen.cause, 'upstream_cancelled');
}

test('express 4: the budget, 504 at the deadline, cancelled when the client goes away', async () => {
  const seen: Seen = {};
  const app = express4();
  app.get(['/fast', '/slow'], async (req, res) => {
    const body = await handle(req.path, seen);
    if (!res.headersSent) res.send(body);
  });
  const server = app.listen(0, '127.0.0.1');
  await once(server, 'listening');
  try {
    await check(`http://127.0.0.1:${(server.address() as { port: number }).port}`, seen);
  } finally {
    server.closeAllConnections();
    server.close();
  }
});

test('fastify: the budget, 504 at the deadline, cancelled when the client goes away', async () => {
  const seen: Seen = {};
  const app = fastify();
  app.get('/fast', (req) => handle(req.url, seen));
  app.get('/slow', (req) => handle(req.url, seen));
  const url = await app.listen({ port: 0, host: '127.0.0.1' });
  try {
    await check(url, seen);
  } finally {
    await app.close();
  }
});
