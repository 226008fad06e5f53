import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Shutdown } from '../../sdk/resilience/index.ts';
import { CANCEL_REASON_HEADER } from '../../sdk/wire.ts';

type Next = (error?: unknown) => void;

function answer(res: ServerResponse, status: number, body: string): void {
  res.statusCode = status;
  res.setHeader('content-type', 'text/plain; charset=utf-8');
  res.setHeader('cache-control', 'no-store');
  res.end(body);
}

/**
 * A readiness handler (node:http or express): 200 while `coordinator` admits work, 503 from the
 * moment shutdown begins, so load balancers stop sending before the server stops accepting.
 */
export function readiness(coordinator: Shutdown): (req: IncomingMessage, res: ServerResponse) => void {
  return (_req, res) => {
    if (coordinator.ready) answer(res, 200, 'ready\n');
    else answer(res, 503, `${coordinator.state}\n`);
  };
}

/** A liveness handler (node:http or express): 200 for as long as the process can answer at all. */
export function liveness(): (req: IncomingMessage, res: ServerResponse) => void {
  return (_req, res) => answer(res, 200, 'alive\n');
}

/**
 * Middleware (express, connect, or node:http with a `next`) that admits each request through
 * `coordinator`: the rest of the chain runs under a context cancelled with cause `shutdown` if it
 * is still running when the grace ends, and the request counts as in flight until its response
 * closes. Once shutdown has begun, new requests are answered 503 with `ctx-cancel-reason: shutdown`
 * (retryable elsewhere) with `connection: close`.
 */
export function admission(
  coordinator: Shutdown,
): (req: IncomingMessage, res: ServerResponse, next: Next) => void {
  return function ctxflowAdmission(_req, res, next) {
    const admitted = coordinator.admit();
    if (admitted === undefined) {
      res.setHeader('connection', 'close');
      res.setHeader(CANCEL_REASON_HEADER, 'shutdown');
      answer(res, 503, 'shutting down\n');
      return;
    }
    res.once('close', admitted.end);
    admitted.ctx.run(next);
  };
}

/**
 * Ties a node:http server (express's included) to `coordinator`: it stops accepting connections
 * when shutdown begins, and once in-flight requests have ended its idle keep-alive connections
 * are closed and the drain waits for the server to close.
 */
export function closeOnShutdown(coordinator: Shutdown, server: Server): void {
  let closed: Promise<void> | undefined;
  coordinator.onStop(() => {
    closed = new Promise<void>((resolve) => server.close(() => resolve()));
  });
  coordinator.onDrain(() => {
    server.closeAllConnections();
    return closed;
  });
}
