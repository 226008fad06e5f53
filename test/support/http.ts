import http from 'node:http';
import type { AddressInfo } from 'node:net';
import net from 'node:net';
import express from 'express';
import {
  type ServerOptions as DeadlineOptions,
  deadlines,
  errorHandler,
} from '../../adapters/http/express.ts';
import { fetch } from '../../adapters/http/fetch.ts';
import type { Cause } from '../../sdk/cause.ts';
import { type Context, current } from '../../sdk/context.ts';

/** A server listening on an ephemeral loopback port. */
export interface Listening {
  readonly server: http.Server;
  readonly port: number;
  readonly url: string;
  close(): Promise<void>;
}

/** Starts `handler` (an express app or a request listener) on 127.0.0.1, port 0. */
export async function listen(handler: http.RequestListener): Promise<Listening> {
  const server = http.createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    server,
    port,
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** What one hop saw of one request. */
export interface Seen {
  /** Date.now() when the handler started. */
  readonly arrivedAt: number;
  readonly deadline: number | undefined;
  /** ctx.remaining() when the handler started. */
  readonly remaining: number;
  /** Resolves with the cause the request's context ended with. */
  readonly ended: Promise<Cause>;
  /** Set by handlers that waited on `ctx.signal` and saw it abort. */
  signalAborted: boolean;
  /** Set by `relayTo`: Date.now() and ctx.remaining() just before calling the next hop. */
  sentAt?: number;
  sentRemaining?: number;
}

/** An express app with `deadlines()` and `errorHandler()`, recording what each request's context looked like. */
export interface Hop extends Listening {
  readonly seen: Seen[];
  /** Resolves when the next request reaches the handler. */
  arrival(): Promise<Seen>;
  readonly errors: unknown[];
}

export type HopHandler = (
  ctx: Context,
  seen: Seen,
  req: express.Request,
  res: express.Response,
) => Promise<void>;

/** Starts one hop: `handler` answers GET /work under the request's context. */
export async function hop(options: DeadlineOptions, handler: HopHandler): Promise<Hop> {
  const seen: Seen[] = [];
  const errors: unknown[] = [];
  let waiters: ((s: Seen) => void)[] = [];
  const app = express();
  app.use(deadlines(options));
  app.get('/work', async (req, res) => {
    const ctx = current();
    const record: Seen = {
      arrivedAt: Date.now(),
      deadline: ctx.deadline,
      remaining: ctx.remaining(),
      ended: new Promise<Cause>((resolve) => ctx.onDone((error) => resolve(error.cause))),
      signalAborted: false,
    };
    seen.push(record);
    for (const wake of waiters) wake(record);
    waiters = [];
    await handler(ctx, record, req, res);
  });
  app.use(errorHandler({ onError: (error) => errors.push(error) }));
  const listening = await listen(app);
  return {
    ...listening,
    seen,
    errors,
    arrival: () => new Promise<Seen>((resolve) => waiters.push(resolve)),
  };
}

/** A handler that calls `next` + '/work' with the ctxflow fetch and relays its answer. */
export function relayTo(next: () => string): HopHandler {
  return async (ctx, seen, _req, res) => {
    seen.sentAt = Date.now();
    seen.sentRemaining = ctx.remaining();
    const answer = await fetch(`${next()}/work`);
    res.status(answer.status).send(await answer.text());
  };
}

/** A handler that waits on `ctx.signal` for `ms`, then answers 200. */
export function slow(ms: number): HopHandler {
  return async (ctx, seen, _req, res) => {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(resolve, ms);
      ctx.signal.addEventListener(
        'abort',
        () => {
          clearTimeout(timer);
          seen.signalAborted = true;
          reject(ctx.signal.reason);
        },
        { once: true },
      );
    });
    res.send('slow done');
  };
}

/** The status line and the raw response of a hand-written request, or `status: 0` if the server closed without one. */
export interface RawAnswer {
  readonly status: number;
  readonly text: string;
}

/**
 * Sends `head` (request line and header lines, no final blank line) as raw bytes, with
 * `Connection: close` so the server closes after answering, and reads the answer.
 */
export function rawRequest(port: number, head: Buffer, timeoutMs = 2_000): Promise<RawAnswer> {
  return new Promise<RawAnswer>((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error('raw request: no answer in time'));
    }, timeoutMs);
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('error', () => {});
    socket.on('close', () => {
      clearTimeout(timer);
      const text = Buffer.concat(chunks).toString('latin1');
      const match = /^HTTP\/1\.1 (\d{3})/.exec(text);
      resolve({ status: match ? Number(match[1]) : 0, text });
    });
    socket.write(Buffer.concat([head, Buffer.from('connection: close\r\n\r\n')]));
  });
}

/** Resolves after `ms`. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A server for outbound tests: /echo returns the raw headers, /hang never answers, /status answers as asked. */
export interface Peer extends Listening {
  requests: number;
  closed: number;
}

export async function peer(): Promise<Peer> {
  const state = { requests: 0, closed: 0 };
  const handler = (req: http.IncomingMessage, res: http.ServerResponse) => {
    state.requests++;
    const url = new URL(req.url ?? '/', 'http://x');
    if (url.pathname === '/hang') {
      res.on('close', () => state.closed++);
      return;
    }
    if (url.pathname === '/status') {
      const reason = url.searchParams.get('reason');
      if (reason !== null) res.setHeader('ctx-cancel-reason', reason);
      res.statusCode = Number(url.searchParams.get('code'));
      res.end('status');
      return;
    }
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify(req.rawHeaders));
  };
  const listening = await listen(handler);
  return Object.assign(state, listening);
}

/** The values of `name` among raw headers [k, v, k, v, ...]. */
export function valuesOf(raw: string[], name: string): string[] {
  const values: string[] = [];
  for (let i = 0; i + 1 < raw.length; i += 2)
    if (raw[i]?.toLowerCase() === name) values.push(raw[i + 1] as string);
  return values;
}
