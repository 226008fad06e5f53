/**
 * A query under a context, on one pg Client: refused when the context has ended, bounded on the
 * server by `statement_timeout`, cancelled on the server when the context ends while it runs; and
 * a pooled client's release held back until the server is done with it, its transaction rolled back.
 */
import { context as otel, ROOT_CONTEXT, type Span } from '@opentelemetry/api';
import type { ClientBase, PoolClient, QueryResult } from 'pg';
import { type Context, type ContextDoneError, current } from '../../sdk/index.ts';
import { ATTR_BUDGET_SENT, traceEnd } from '../../sdk/wire.ts';
import { sendCancel } from './cancel.ts';
import { countDbEnded } from './metrics.ts';

/** Marks a pool or client the explicit adapter equipped: `init()`'s hooks leave it to the adapter. */
export const MANAGED = Symbol.for('ctxflow.pg.managed');

/** The database system name on metrics and spans. */
export const DB_SYSTEM = 'postgresql';

/** PostgreSQL's largest `statement_timeout`, in milliseconds (a 32-bit int). */
export const MAX_STATEMENT_TIMEOUT_MS = 2_147_483_647;

/** The query method of pg's Client, as `init()` and the adapter call it. */
export type QueryMethod = (this: ClientBase, ...args: unknown[]) => unknown;
type Callback = (error: Error | undefined, result?: QueryResult) => void;

/**
 * pg 8.x internals this module reads: the query queue, the running query (renamed with a leading
 * underscore after 8.16), the connection.
 */
interface Internals {
  readonly _queryQueue?: unknown[];
  readonly _activeQuery?: unknown;
  readonly queryQueue?: unknown[];
  readonly activeQuery?: unknown;
  readonly pipeline?: boolean;
  readonly connection?: {
    on(event: 'readyForQuery', listener: (message: { status?: string }) => void): unknown;
  };
  readonly connectionParameters?: { statement_timeout?: unknown };
  readonly host?: string;
  readonly port?: number;
  readonly processID?: number | null;
  readonly secretKey?: number | null;
}

/** What the adapter tracks of one client (one server session). */
class Session {
  /** Transaction status from the last ReadyForQuery: `I` idle, `T` in a transaction, `E` failed one. */
  tx = 'I';
  /** The session's `statement_timeout` as ctxflow last set it; undefined when unknown. */
  timeout: number | 'default' | undefined = 'default';
  /** Queries of ours the server has not finished, and cancel requests on their way. */
  busy = 0;
  /** A cancel request was written and its fate is unknown: the session must not be reused. */
  tainted = false;
  /** Set when the context of a checkout ended inside a transaction: its queries are refused. */
  abandoned: ContextDoneError | undefined = undefined;
  readonly configuredTimeout: number;
  #waiters: (() => void)[] = [];

  constructor(configuredTimeout: number) {
    this.configuredTimeout = configuredTimeout;
  }

  /** Resolves once the server is done with every query of ours and every cancel is answered. */
  quiet(): Promise<void> {
    if (this.busy === 0) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  done(): void {
    if (--this.busy > 0) return;
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const wake of waiters) wake();
  }
}

const sessions = new WeakMap<ClientBase, Session>();

function sessionOf(client: ClientBase): Session {
  let session = sessions.get(client);
  if (session !== undefined) return session;
  const internals = client as unknown as Internals;
  const configured = Number(internals.connectionParameters?.statement_timeout);
  session = new Session(Number.isFinite(configured) && configured > 0 ? configured : 0);
  const tracked = session;
  internals.connection?.on('readyForQuery', (message) => {
    const was = tracked.tx;
    tracked.tx = typeof message.status === 'string' ? message.status : 'I';
    // A SET inside a transaction is undone by its rollback: after one, the value is unknown.
    if (was !== 'I' && tracked.tx === 'I') tracked.timeout = undefined;
  });
  sessions.set(client, session);
  return session;
}

/** The query method under every shimmer-style wrapper (OpenTelemetry's, init()'s): for ctxflow's own statements. */
function innermost(fn: QueryMethod): QueryMethod {
  let inner = fn as QueryMethod & { __wrapped?: boolean; __original?: QueryMethod };
  while (inner.__wrapped === true && typeof inner.__original === 'function') {
    inner = inner.__original as typeof inner;
  }
  return inner;
}

/**
 * Runs one of ctxflow's own statements with pg's own query method (under the adapter's instance
 * wrapper and every prototype wrapper: no span, no context) and reports failure as false.
 */
function internalQuery(client: ClientBase, sql: string): Promise<boolean> {
  const method = innermost((Object.getPrototypeOf(client) as { query: QueryMethod }).query);
  return otel.with(ROOT_CONTEXT, () => {
    try {
      return (method.call(client, sql) as Promise<unknown>).then(
        () => true,
        () => false,
      );
    } catch {
      return Promise.resolve(false);
    }
  });
}

/**
 * The `statement_timeout` a query under `ctx` should run with: what is left of its budget (at
 * least 1 ms: 0 would mean none; at most PostgreSQL's maximum), or the session's own default
 * when the context has no deadline or the configured timeout is shorter.
 */
export function statementTimeout(ctx: Context, configuredMs: number): number | 'default' {
  const deadline = ctx.deadline;
  if (deadline === undefined) return 'default';
  const left = Math.ceil(deadline - Date.now());
  if (!Number.isFinite(left)) return 'default';
  const wanted = Math.min(Math.max(1, left), MAX_STATEMENT_TIMEOUT_MS);
  return configuredMs > 0 && configuredMs <= wanted ? 'default' : wanted;
}

/**
 * The SET statement that brings the session's timeout in line with `wanted`, or undefined when the
 * current one will do: never shorter than wanted, at most a quarter (plus 10 ms) longer. The value
 * set is an eighth longer than wanted, so that the next queries of a request, with a little less
 * left, need no SET of their own (each SET is a round trip).
 */
export function timeoutStatement(current: number | 'default' | undefined, wanted: number | 'default') {
  if (wanted === 'default') {
    return current === 'default' ? undefined : { sql: 'SET statement_timeout TO DEFAULT', value: wanted };
  }
  if (typeof current === 'number' && current >= wanted && current <= wanted + wanted / 4 + 10)
    return undefined;
  const value = Math.min(MAX_STATEMENT_TIMEOUT_MS, Math.ceil(wanted + wanted / 8) + 5);
  return { sql: `SET statement_timeout = ${value}`, value };
}

/** Set by `requestHook` during the call into OpenTelemetry's wrapper: the span of the query being sent. */
let sentSpan: Span | undefined;

/**
 * A `requestHook` for OpenTelemetry's `PgInstrumentation` (`init()` passes it): hands each query's
 * span to ctxflow, which records on it the budget the query was sent with and, when its context
 * ends it, the cause.
 */
export function requestHook(span: Span): void {
  sentSpan = span;
}

/** The span `requestHook` was handed since the last call, if any. */
function takeSentSpan(): Span | undefined {
  const span = sentSpan;
  sentSpan = undefined;
  return span;
}

function isSubmittable(value: unknown): boolean {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as { submit?: unknown }).submit === 'function'
  );
}

function queueOf(internals: Internals): unknown[] | undefined {
  return internals._queryQueue ?? internals.queryQueue;
}

// Newer pg keeps `activeQuery` as a getter that prints a deprecation warning: read it only where it is a field.
function activeOf(internals: Internals): unknown {
  return '_activeQuery' in internals ? internals._activeQuery : internals.activeQuery;
}

/** The query pg has just queued or started on `client` for the call that returned. */
function lastQuery(internals: Internals): unknown {
  const queue = queueOf(internals);
  return queue !== undefined && queue.length > 0 ? queue[queue.length - 1] : activeOf(internals);
}

/** Settles a callback-style call from a promise, or returns the promise. */
function deliver(
  promise: Promise<QueryResult>,
  callback: Callback | undefined,
): Promise<QueryResult> | undefined {
  if (callback === undefined) return promise;
  promise.then(
    (result) => callback(undefined, result),
    (error: Error) => callback(error),
  );
  return undefined;
}

/**
 * `client.query(...)` under `current()`: what `init()` and the adapter put in place of pg's. A
 * context that has ended sends nothing; a deadline becomes the statement's `statement_timeout`;
 * a context that ends while the query runs rejects it at once with the context's error and sends
 * PostgreSQL's cancel request (a query still queued on the client is taken out of the queue).
 * Submittables (pg-cursor, pg-query-stream) go to pg unchanged, after a `statement_timeout` an
 * earlier query left on the session is reset.
 */
export function contextQuery(client: ClientBase, method: QueryMethod, args: unknown[]): unknown {
  const first = args[0];
  if ((typeof first !== 'string' && typeof first !== 'object') || first === null) {
    return method.apply(client, args);
  }
  if (isSubmittable(first)) {
    // Run under no context of ours, and so not under the budget a previous query left on the
    // session: pg sends queries in order, the reset goes first.
    const session = sessionOf(client);
    if (typeof session.timeout === 'number') {
      session.timeout = 'default';
      internalQuery(client, 'SET statement_timeout TO DEFAULT').then((ok) => {
        if (!ok) session.timeout = undefined;
      });
    }
    return method.apply(client, args);
  }
  let callback: Callback | undefined;
  let callArgs = args;
  const last = args[args.length - 1];
  if (args.length > 1 && typeof last === 'function') {
    callback = last as Callback;
    callArgs = args.slice(0, -1);
  } else if (typeof first === 'object' && typeof (first as { callback?: unknown }).callback === 'function') {
    callback = (first as { callback: Callback }).callback;
    callArgs = [{ ...first, callback: undefined }, ...args.slice(1)];
  }
  const ctx = current();
  const session = sessionOf(client);
  if (session.abandoned !== undefined) return deliver(Promise.reject(session.abandoned), callback);
  const ended = ctx.error;
  if (ended !== undefined) {
    countDbEnded(DB_SYSTEM, 'not_sent', ended.cause.code);
    return deliver(Promise.reject(ended), callback);
  }
  const timeout = timeoutStatement(session.timeout, statementTimeout(ctx, session.configuredTimeout));
  if (timeout !== undefined) {
    session.timeout = timeout.value;
    internalQuery(client, timeout.sql).then((ok) => {
      if (!ok) session.timeout = undefined;
    });
  }
  takeSentSpan();
  let sent: Promise<QueryResult>;
  try {
    sent = method.apply(client, callArgs) as Promise<QueryResult>;
  } catch (error) {
    return deliver(Promise.reject(error), callback);
  }
  const span = takeSentSpan();
  const internals = client as unknown as Internals;
  const query = lastQuery(internals);
  if (span?.isRecording() && ctx.deadline !== undefined) {
    span.setAttribute(ATTR_BUDGET_SENT, Math.max(0, Math.floor(ctx.deadline - Date.now())));
  }
  session.busy++;
  let finished = false;
  const finish = () => {
    if (finished) return;
    finished = true;
    session.done();
  };
  const result = new Promise<QueryResult>((resolve, reject) => {
    let cut = false;
    const unlink = ctx.onDone((error) => {
      cut = true;
      countDbEnded(DB_SYSTEM, 'query', error.cause.code);
      if (span !== undefined) traceEnd(span, error);
      stop(internals, session, query, error);
      reject(error);
    });
    sent.then(
      (value) => {
        unlink();
        finish();
        if (!cut) resolve(value);
      },
      (error: unknown) => {
        unlink();
        finish();
        if (!cut) reject(error);
      },
    );
  });
  return deliver(result, callback);
}

/** Stops `query`: cancelled on the server when it runs, taken out of the client's queue when it waits. */
function stop(internals: Internals, session: Session, query: unknown, error: ContextDoneError): void {
  if (query === undefined) return;
  if (activeOf(internals) === query) {
    // Pipelined queries share the connection: a cancel could hit another caller's statement.
    if (internals.pipeline === true) return;
    session.busy++;
    sendCancel(internals).then((safe) => {
      if (!safe) session.tainted = true;
      session.done();
    });
    return;
  }
  const queue = queueOf(internals);
  const index = queue === undefined ? -1 : queue.indexOf(query);
  if (index < 0) return;
  queue?.splice(index, 1);
  // Settles pg's promise (and its span) the way pg's own read timeout does.
  (query as { handleError?: (error: Error, connection: unknown) => void }).handleError?.(
    error,
    internals.connection,
  );
}

/** Equips one client so that its queries run under `current()` (the explicit adapter's way). */
export function equipClient<C extends ClientBase>(client: C): C {
  const marked = client as C & { [MANAGED]?: true };
  if (marked[MANAGED] === true) return client;
  const method = client.query as unknown as QueryMethod;
  Object.defineProperty(client, MANAGED, { value: true });
  Object.defineProperty(client, 'query', {
    configurable: true,
    writable: true,
    value: function ctxflowQuery(this: ClientBase, ...args: unknown[]) {
      return contextQuery(this, method, args);
    },
  });
  return client;
}

/**
 * Takes over a pooled client's `release` for one checkout made under `ctx`. When `ctx` ends while
 * the client is out and inside a transaction, the transaction is rolled back at once (its locks
 * freed) and the checkout's further queries are refused. Release waits until the server is done
 * with every query of ours and every cancel is answered; rolls back a transaction left open; and
 * discards the connection (release with an error) when a rollback fails or a cancel's fate is
 * unknown. The pool never gets a client mid-query or inside a transaction.
 */
export function guardRelease(client: PoolClient, ctx: Context): void {
  const release = client.release;
  const session = sessionOf(client);
  session.abandoned = undefined;
  let released = false;
  let rollingBack: Promise<boolean> | undefined;
  const rollback = () => {
    rollingBack ??= session.quiet().then(() => internalQuery(client, 'ROLLBACK'));
    return rollingBack;
  };
  const unlink = ctx.onDone((error) => {
    if (released || (session.tx === 'I' && session.busy === 0)) return;
    session.abandoned = error;
    rollback();
  });
  client.release = function ctxflowRelease(this: PoolClient, err?: Error | boolean) {
    // pg's own words for it; pg's release would not know yet, while ours waits for the server.
    if (released) throw new Error('Release called on client which has already been released to the pool.');
    released = true;
    unlink();
    if (session.busy === 0 && session.tx === 'I' && !session.tainted && rollingBack === undefined) {
      return release.call(this, err);
    }
    // Checked out until the server is done: a connection dying meanwhile must not emit an 'error'
    // nobody listens to (pg-pool listens again only once the client is back); it makes it unusable.
    let died = false;
    const onError = (): void => {
      died = true;
    };
    client.on('error', onError);
    session
      .quiet()
      .then(() => (session.tx === 'I' && rollingBack === undefined ? true : rollback()))
      .then((ok) => {
        session.abandoned = undefined;
        client.removeListener('error', onError);
        const unusable = died || !ok || session.tainted || session.tx !== 'I';
        release.call(
          client,
          err || (unusable ? new Error('ctxflow/pg: connection not reusable') : undefined),
        );
      });
  };
}
