// Cancellation latency across three hops, all in this one process so that one monotonic clock
// (process.hrtime) times both ends: a client aborts its request at A, and the time is taken when
// C's handler sees its context signal abort. A -> B -> C are express apps on loopback with the
// ctxflow middleware and fetch, no OpenTelemetry SDK. Prints one JSON line.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { current } from 'ctxflow';
import { deadlines, errorHandler } from 'ctxflow/express';
import { fetch } from 'ctxflow/fetch';
import express from 'express';

const TRIALS = Number(process.env.BENCH_CANCEL_TRIALS ?? 1_000);
type Mode = 'close' | 'signal';

interface Trial {
  arrived: () => void;
  aborted: (at: bigint) => void;
}
let trial: Trial | undefined;

async function listen(app: express.Express): Promise<{ url: string; server: http.Server }> {
  const server = http.createServer(app);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server };
}

async function chain(mode: Mode) {
  const c = express();
  c.use(deadlines({ disconnect: mode }));
  c.get('/', (_req, _res) => {
    const signal = current().signal;
    const t = trial;
    signal.addEventListener('abort', () => t?.aborted(process.hrtime.bigint()), { once: true });
    t?.arrived();
  });
  const cs = await listen(c);
  const relay = (next: string) => {
    const app = express();
    app.use(deadlines({ disconnect: mode, budgetMs: 60_000 }));
    app.get('/', async (_req, res) => {
      const answer = await fetch(`${next}/`);
      res.status(answer.status).send(await answer.text());
    });
    app.use(errorHandler({ onError: () => {} }));
    return app;
  };
  const bs = await listen(relay(cs.url));
  const as = await listen(relay(bs.url));
  return { url: as.url, servers: [as.server, bs.server, cs.server] };
}

function once(url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    let req: http.ClientRequest;
    let t0 = 0n;
    trial = {
      arrived: () => {
        t0 = process.hrtime.bigint();
        req.destroy();
      },
      aborted: (at) => resolve(Number(at - t0) / 1e6),
    };
    req = http.request(url, { agent: false });
    req.on('error', () => {});
    req.end();
    setTimeout(() => reject(new Error('cancel trial timed out')), 5_000).unref();
  });
}

function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] as number;
}

const results: Record<string, { p50: number; p99: number; max: number; trials: number }> = {};
for (const mode of ['close', 'signal'] as const) {
  const { url, servers } = await chain(mode);
  for (let i = 0; i < 50; i++) await once(url);
  const latencies: number[] = [];
  for (let i = 0; i < TRIALS; i++) latencies.push(await once(url));
  latencies.sort((x, y) => x - y);
  results[mode] = {
    p50: quantile(latencies, 0.5),
    p99: quantile(latencies, 0.99),
    max: latencies.at(-1) as number,
    trials: latencies.length,
  };
  for (const server of servers) {
    server.closeAllConnections();
    server.close();
  }
}
console.log(JSON.stringify(results));
