/**
 * init() with tracing off, in one process: unchanged node:http, express and koa servers, fetch and
 * http.request clients get deadlines and cancellation, with the per-request options of `http`.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import http from 'node:http';
import { after, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { init } from '../init/index.ts';

// Listeners that do not trust the caller's deadline: an edge, and the recording peers (so that they
// outlive the caller's budget and the caller's own end is what stops them).
const untrusted = new Set<number>();
const telemetry = init({
  tracing: false,
  http: {
    budgetMs: (req) => (req.url?.startsWith('/budget') ? 100 : undefined),
    trustInbound: (req) => !untrusted.has(req.socket.localPort as number),
    ignore: (req) => req.url === '/health',
  },
});

// Loaded after init(), as the rule says (node:http is patched on its prototypes and works either way).
const { default: express } = await import('express');
const { default: Koa } = await import('koa');
const { current } = await import('../sdk/context.ts');
const { listen } = await import('./support/http.ts');

after(() => telemetry.shutdown());

/** A peer that records the headers it got and answers after `ms` (query), reporting an early close. */
async function recorder() {
  const seen: { headers: http.IncomingHttpHeaders; closedEarly?: boolean }[] = [];
  const peer = await listen((req, res) => {
    const entry: (typeof seen)[number] = { headers: req.headers };
    seen.push(entry);
    const ms = Number(new URL(req.url ?? '/', 'http://x').searchParams.get('ms') ?? 0);
    const timer = setTimeout(() => res.end('ok'), ms);
    res.on('close', () => {
      clearTimeout(timer);
      entry.closedEarly = !res.writableFinished;
    });
  });
  untrusted.add(peer.port);
  return { peer, seen };
}

function get(
  url: string,
  headers: http.OutgoingHttpHeaders = {},
): Promise<http.IncomingMessage & { text: string }> {
  return new Promise((resolve, reject) => {
    http
      .get(url, { headers }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          text += chunk;
        });
        res.on('end', () => resolve(Object.assign(res, { text })));
      })
      .on('error', reject);
  });
}

test('plain node:http: the handler runs in the caller’s budget and fetch carries what is left', async () => {
  const { peer, seen } = await recorder();
  let remaining = -1;
  let fetchMs = -1;
  const server = await listen(async (_req, res) => {
    remaining = current().remaining();
    const started = Date.now();
    const response = await fetch(`${peer.url}/?ms=0`);
    fetchMs = Date.now() - started;
    res.end(await response.text());
  });
  try {
    const res = await get(server.url, { 'ctx-timeout': '1000' });
    assert.equal(res.statusCode, 200);
    assert.ok(remaining > 0 && remaining <= 1000, `remaining ${remaining}`);
    const sent = Number(seen[0]?.headers['ctx-timeout']);
    // What was left when the request went out, less the 5 ms reserve: bounded by the clock around
    // the fetch, not by a fixed slack a busy machine can exceed.
    assert.ok(
      sent <= remaining - 5 && sent >= remaining - 5 - fetchMs - 2,
      `sent ${sent}, had ${remaining}, the fetch took ${fetchMs} ms`,
    );
    assert.equal(seen[0]?.headers['ctx-timeout']?.includes(','), false);
  } finally {
    await Promise.all([server.close(), peer.close()]);
  }
});

test('express: the deadline answers 504 with ctx-cancel-reason and aborts the fetch in flight', async () => {
  const { peer, seen } = await recorder();
  const app = express();
  app.get('/', async (_req, res) => {
    try {
      await fetch(`${peer.url}/?ms=5000`);
    } catch {
      // The context's end answered already.
    }
    if (!res.headersSent) res.end('late');
  });
  const server = await listen(app);
  try {
    const started = performance.now();
    const res = await get(server.url, { 'ctx-timeout': '150' });
    assert.equal(res.statusCode, 504);
    assert.equal(res.headers['ctx-cancel-reason'], 'deadline_exceeded');
    assert.ok(performance.now() - started < 2000);
    for (let i = 0; i < 100 && seen[0]?.closedEarly !== true; i++) await sleep(10);
    assert.equal(seen[0]?.closedEarly, true);
  } finally {
    await Promise.all([server.close(), peer.close()]);
  }
});

test('http.request: carries the budget and is destroyed with the context’s error', async () => {
  const { peer, seen } = await recorder();
  let failure: unknown;
  const server = await listen((_req, res) => {
    http
      .get(`${peer.url}/?ms=5000`, (answer) => answer.resume())
      .on('error', (error) => {
        failure = error;
      });
    setTimeout(() => res.headersSent || res.end('late'), 3000).unref();
  });
  try {
    const res = await get(server.url, { 'ctx-timeout': '150' });
    assert.equal(res.statusCode, 504);
    for (let i = 0; i < 100 && failure === undefined; i++) await sleep(10);
    assert.equal((failure as Error).name, 'DeadlineExceededError');
    assert.ok(Number(seen[0]?.headers['ctx-timeout']) < 150);
  } finally {
    await Promise.all([server.close(), peer.close()]);
  }
});

test('a client that goes away cancels the handler’s context and its outbound call', async () => {
  const { peer, seen } = await recorder();
  let cause: string | undefined;
  const server = await listen(async (_req, res) => {
    const ctx = current();
    ctx.onDone((error) => {
      cause = error.cause.code;
    });
    await fetch(`${peer.url}/?ms=5000`).catch(() => undefined);
    if (!res.headersSent) res.end();
  });
  try {
    const req = http.get(server.url, { headers: { 'ctx-timeout': '5000' } });
    req.on('error', () => {});
    for (let i = 0; i < 200 && seen.length === 0; i++) await sleep(10);
    req.destroy();
    for (let i = 0; i < 200 && seen[0]?.closedEarly !== true; i++) await sleep(10);
    assert.equal(cause, 'upstream_cancelled');
    assert.equal(seen[0]?.closedEarly, true);
  } finally {
    await Promise.all([server.close(), peer.close()]);
  }
});

test('per-route budget, untrusted listener and ignored route', async () => {
  const remaining: Record<string, number> = {};
  const handler = (req: http.IncomingMessage, res: http.ServerResponse) => {
    remaining[`${req.socket.localPort}${req.url}`] = current().remaining();
    res.end();
  };
  const inner = await listen(handler);
  const edge = await listen(handler);
  untrusted.add(edge.port);
  try {
    await get(`${inner.url}/budget`, { 'ctx-timeout': '5000' });
    await get(`${inner.url}/other`, { 'ctx-timeout': '5000' });
    await get(`${edge.url}/other`, { 'ctx-timeout': '5000' });
    await get(`${inner.url}/health`, { 'ctx-timeout': '5000' });
    assert.ok((remaining[`${inner.port}/budget`] as number) <= 100);
    assert.ok((remaining[`${inner.port}/other`] as number) > 4000);
    assert.equal(remaining[`${edge.port}/other`], Number.POSITIVE_INFINITY);
    assert.equal(remaining[`${inner.port}/health`], Number.POSITIVE_INFINITY);
  } finally {
    await Promise.all([inner.close(), edge.close()]);
  }
});

test('koa (on node:http): the same budget and 504', async () => {
  const { peer } = await recorder();
  const app = new Koa();
  let remaining = -1;
  app.use(async (ctx) => {
    remaining = current().remaining();
    if (ctx.path === '/slow') await fetch(`${peer.url}/?ms=5000`).catch(() => undefined);
    ctx.body = 'ok';
  });
  const server = app.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  try {
    const fast = await get(`${url}/`, { 'ctx-timeout': '1000' });
    assert.equal(fast.statusCode, 200);
    assert.ok(remaining > 0 && remaining <= 1000);
    const slow = await get(`${url}/slow`, { 'ctx-timeout': '150' });
    assert.equal(slow.statusCode, 504);
    assert.equal(slow.headers['ctx-cancel-reason'], 'deadline_exceeded');
  } finally {
    server.closeAllConnections();
    server.close();
    await peer.close();
  }
});

test('init() is idempotent', () => {
  assert.equal(init({ tracing: true }), telemetry);
  assert.equal(telemetry.tracing, false);
});

test('https servers’ request listeners get the wrapper too; HTTP/2 servers’ are left alone', async () => {
  const https = await import('node:https');
  const http2 = await import('node:http2');
  const handler = () => {};
  const [wrapped] = https.createServer(handler).rawListeners('request') as { listener?: unknown }[];
  assert.notEqual(wrapped, handler);
  assert.equal(wrapped?.listener, handler);
  assert.equal(http2.createServer(handler).rawListeners('request')[0], handler);
});
