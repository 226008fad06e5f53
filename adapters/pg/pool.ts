/**
 * A pool's waits and queries under a context: a wait for a free client ends with the context and
 * leaves the pool's queue; `pool.query` returns its client only once the server is done with it.
 */
import type { Pool, PoolClient, QueryResult } from 'pg';
import { type Context, current, isContextDoneError } from '../../sdk/index.ts';
import { DB_SYSTEM, guardRelease } from './client.ts';
import { countDbEnded } from './metrics.ts';

/** pg-pool's connect in its callback form. */
export type ConnectMethod = (this: Pool, callback: ConnectCallback) => unknown;
type ConnectCallback = (
  error: Error | undefined,
  client?: PoolClient,
  done?: (release?: Error | boolean) => void,
) => void;

/** pg-pool's queue of waiting checkouts (pg-pool 3.x internals). */
interface PendingItem {
  callback: (error: Error | undefined, client?: PoolClient) => void;
}

function noop(): void {}

/**
 * Checks out a client under `ctx`. A context that has ended waits for nothing; one that ends while
 * the checkout waits rejects it with the context's error at once and takes it out of the pool's
 * queue, so that no client is ever handed to it; a client made for it too late goes back to the pool.
 */
function acquire(pool: Pool, connect: ConnectMethod, ctx: Context): Promise<PoolClient> {
  const ended = ctx.error;
  if (ended !== undefined) {
    countDbEnded(DB_SYSTEM, 'pool_wait', ended.cause.code);
    return Promise.reject(ended);
  }
  return new Promise((resolve, reject) => {
    let settled = false;
    let unlink = noop;
    const queue = (pool as unknown as { _pendingQueue?: PendingItem[] })._pendingQueue;
    const before = queue?.length ?? 0;
    connect.call(pool, (error, client) => {
      if (settled) {
        client?.release();
        return;
      }
      settled = true;
      unlink();
      if (error !== undefined || client === undefined) reject(error);
      else resolve(client);
    });
    // pg-pool queues the checkout synchronously when it cannot serve it at once: that entry is ours.
    const item = queue !== undefined && queue.length > before ? queue[queue.length - 1] : undefined;
    if (settled) return;
    unlink = ctx.onDone((error) => {
      if (settled) return;
      settled = true;
      countDbEnded(DB_SYSTEM, 'pool_wait', error.cause.code);
      const index = item === undefined || queue === undefined ? -1 : queue.indexOf(item);
      if (index >= 0) {
        queue?.splice(index, 1);
        // Its callback (pg-pool's, with its connection timer, and an instrumentation's span) hears it too.
        item?.callback(error);
      }
      reject(error);
    });
  });
}

/**
 * `pool.connect()` under `current()`: the wait ends with the context, and the client's release is
 * guarded (see `guardRelease`). `equip` prepares each client checked out (the explicit adapter
 * wraps its `query`).
 */
export function contextConnect(
  pool: Pool,
  connect: ConnectMethod,
  callback: ConnectCallback | undefined,
  equip: (client: PoolClient) => void = noop,
): Promise<PoolClient> | undefined {
  const ctx = current();
  const checkout = acquire(pool, connect, ctx).then((client) => {
    equip(client);
    guardRelease(client, ctx);
    return client;
  });
  if (callback === undefined) return checkout;
  checkout.then(
    (client) => callback(undefined, client, client.release),
    (error: Error) => callback(error, undefined, noop),
  );
  return undefined;
}

/**
 * `pool.query(...)` under `current()`: a checkout and a query under the same context. The client
 * goes back once the server is done with it: kept when the context ended the query (it was
 * cancelled, the session is sound), discarded on any other error, as pg-pool does.
 */
export function contextPoolQuery(
  pool: Pool,
  original: (...args: unknown[]) => unknown,
  args: unknown[],
): unknown {
  const first = args[0];
  const last = args[args.length - 1];
  // pg-pool's own handling for what it refuses and for submittables, which report through their callback.
  if (typeof first === 'function' || (typeof first === 'object' && first !== null && 'submit' in first)) {
    return original.apply(pool, args);
  }
  const callback =
    args.length > 1 && typeof last === 'function'
      ? (last as (e?: Error, r?: QueryResult) => void)
      : undefined;
  const queryArgs = callback === undefined ? args : args.slice(0, -1);
  const run = async (): Promise<QueryResult> => {
    const client = await pool.connect();
    let failure: Error | undefined;
    // pg-pool takes its idle listener off a client it hands out, and its own query puts one on,
    // as this does: a connection that dies mid-query fails the query (it rejects with the error)
    // instead of emitting an 'error' nobody listens to, which would end the process.
    const onError = (error: Error): void => {
      failure ??= error;
    };
    client.on('error', onError);
    try {
      return await (client as unknown as { query(...a: unknown[]): Promise<QueryResult> }).query(
        ...queryArgs,
      );
    } catch (error) {
      if (!isContextDoneError(error)) failure ??= error as Error;
      throw error;
    } finally {
      client.removeListener('error', onError);
      client.release(failure);
    }
  };
  const result = run();
  if (callback === undefined) return result;
  result.then(
    (value) => callback(undefined, value),
    (error: Error) => callback(error),
  );
  return undefined;
}
