/**
 * Three services on loopback, edge -> inventory -> pricing, each an express app with ctxflow.
 * Three requests show what ctxflow does: the budget shrinking hop by hop, a deadline ending the
 * work at every hop, and a client that gives up stopping the work behind it.
 */
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { current } from 'ctxflow';
import { deadlines, errorHandler } from 'ctxflow/express';
import { fetch } from 'ctxflow/fetch';
import express from 'express';

const log = (service: string, text: string) => console.log(`  ${service.padEnd(9)} ${text}`);
let stops = 0;
/** Called when a hop starts a request's work: scenario 3's client gives up once the last hop has. */
let onArrival = (_service: string) => {};

/** Starts one service whose GET / works `?work=` milliseconds, then calls `next` if it has one. */
async function service(name: string, options: { next?: () => string; edge?: boolean }) {
  const app = express();
  app.use(deadlines(options.edge ? { budgetMs: 300, trustInbound: false } : {}));
  app.get('/', async (req, res) => {
    const ctx = current();
    log(name, `arrived with ${ctx.remaining()} ms left`);
    onArrival(name);
    ctx.onDone((error) => {
      // Every request's context ends: 'cancelled' is the release after a complete response.
      if (error.cause.code === 'cancelled') return;
      stops++;
      log(name, `stopped: ${error.cause.code}`);
    });
    const work = Number(req.query.work ?? 20);
    await sleep(work, undefined, { signal: ctx.signal });
    const next = options.next?.();
    const downstream = next ? await (await fetch(`${next}/?work=${work}`)).text() : 'ok';
    res.send(downstream);
  });
  app.use(errorHandler({ onError: () => {} }));
  const server = app.listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

const pricing = await service('pricing', {});
const inventory = await service('inventory', { next: () => pricing.url });
const edge = await service('edge', { next: () => inventory.url, edge: true });

/**
 * Calls the edge, then waits (at most a second) until `hopsToStop` hops reported their end. With
 * `giveUpAt`, the client gives up as soon as that hop has started working.
 */
async function call(title: string, query: string, hopsToStop: number, giveUpAt?: string) {
  console.log(`\n${title}`);
  stops = 0;
  const client = new AbortController();
  const started = Date.now();
  onArrival = (service) => {
    if (service === giveUpAt) client.abort();
  };
  try {
    const res = await globalThis.fetch(`${edge.url}/${query}`, { signal: client.signal });
    const reason = res.headers.get('ctx-cancel-reason');
    log('client', `got ${res.status}${reason ? ` with ctx-cancel-reason: ${reason}` : ''}`);
  } catch {
    log('client', `gave up after ${Date.now() - started} ms`);
  }
  for (let waited = 0; stops < hopsToStop && waited < 1000; waited += 10) await sleep(10);
}

console.log('edge has a 300 ms budget per request; every hop gets what is left, minus 5 ms');
await call('1. a quick request: the budget shrinks hop by hop', '?work=10', 0);
await call('2. each hop takes 120 ms: the deadline ends the work at every hop', '?work=120', 3);
await call(
  '3. the client gives up once pricing is working: the work behind it stops',
  '?work=40',
  3,
  'pricing',
);

for (const { server } of [edge, inventory, pricing]) server.close();
