/**
 * ctxflow/pg: the deadline and the cancel reach PostgreSQL (node-postgres, `pg` 8.x). Under a
 * context, a wait for a pooled connection ends with it, a running query is cancelled on the server
 * when it ends, its remaining budget bounds the statement (`statement_timeout`), and a transaction
 * it leaves open is rolled back before the connection goes back to the pool.
 */
import type { Client, Pool, PoolClient } from 'pg';
import { equipClient, MANAGED } from './client.ts';
import { type ConnectMethod, contextConnect, contextPoolQuery } from './pool.ts';

export { CANCEL_TIMEOUT_MS } from './cancel.ts';
export { MAX_STATEMENT_TIMEOUT_MS, requestHook } from './client.ts';

/**
 * Equips a pg Pool, in place, and returns it: `connect()` and `query()` run under `current()`.
 * A checkout waits only while its context lives; each query is refused when the context has ended,
 * runs with the remaining budget as its `statement_timeout`, and is cancelled on the server when
 * the context ends; a released client goes back to the pool once the server is done with it.
 */
export function pool<P extends Pool>(inner: P): P {
  const marked = inner as P & { [MANAGED]?: true };
  if (marked[MANAGED] === true) return inner;
  const connect = inner.connect as unknown as ConnectMethod;
  const query = inner.query as unknown as (...args: unknown[]) => unknown;
  Object.defineProperty(inner, MANAGED, { value: true });
  Object.assign(inner, {
    connect(this: Pool, callback?: Parameters<ConnectMethod>[0]) {
      return contextConnect(this, connect, callback, equip);
    },
    query(this: Pool, ...args: unknown[]) {
      return contextPoolQuery(this, query, args);
    },
  });
  return inner;
}

/** Equips a standalone pg Client, in place, and returns it: its queries run under `current()`, as a pool's do. */
export function client<C extends Client>(inner: C): C {
  return equipClient(inner);
}

function equip(checkout: PoolClient): void {
  equipClient(checkout);
}
