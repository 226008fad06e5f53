/**
 * The node:http server side: each request gets a context from its headers and this service's
 * budget, ended when the client goes away or the deadline passes (answered 504/499 with
 * `ctx-cancel-reason`), and cancelled once the response is complete. `ctxflow/express` is a thin
 * layer over it.
 */
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import { type Context as OtelContext, context as otel, type TextMapGetter, trace } from '@opentelemetry/api';
import { type Cause, type Context, ContextDoneError, getContext, setContext } from '../../sdk/index.ts';
import {
  acceptInbound,
  addPlainListener,
  CANCEL_REASON_HEADER,
  type CauseSource,
  checkForeignHeaders,
  DEFAULT_RESERVE_MS,
  encodeCause,
  ensureContextManager,
  hopAttributes,
  httpStatusFor,
  type InboundCall,
  type InboundOptions,
  rpcServerSpan,
  type Transport,
} from '../../sdk/wire.ts';
import { errorLogger } from './error-log.ts';

// Not imported: the ES module facade of node:http reads every export, its lazy WebSocket getters
// too, which loads Node's bundled undici (about 40 ms at start-up, for init() and every server).
const http = process.getBuiltinModule('node:http');

/** How requests get their context; every field has a default. */
export interface ServerOptions extends InboundOptions {
  /**
   * A request arriving with less than this many milliseconds left is answered 504 at once,
   * without running its handler. Default 5 (the default reserve: less than that could not
   * give a downstream call any budget).
   */
  minBudgetMs?: number;
  /**
   * How a client going away is noticed: `close` by the response's 'close' event before it finished
   * (every Node version); `signal` also listens to `req.signal` where the runtime has it (Node 24).
   * `signal` fired about 0.1-0.2 ms earlier over three hops in our runs, and costs an AbortController
   * and a socket listener per request (about 10 us of CPU). Default `close`.
   */
  disconnect?: 'close' | 'signal';
}

/** Reports a handler error that is not a context's end; `withDeadlines` and `errorHandler` take one. */
export type ErrorReporter = (error: unknown, req: IncomingMessage) => void;

/** Options of `withDeadlines`: the server options and how handler errors are reported. */
export interface HandlerOptions extends ServerOptions {
  /**
   * Called with each handler error that is not a context's end (those are expected), unless the
   * request's context had already ended (writing after a 504 is its aftermath, not a new failure).
   * Default: `errorLogger()` to stderr (each distinct error's stack once, then a count of its
   * repeats per minute); nothing when NODE_ENV is `test`.
   */
  onError?: ErrorReporter;
}

/** A node:http request handler, sync or async. */
export type RequestHandler = (req: IncomingMessage, res: ServerResponse) => unknown;

const HTTP: Transport = { name: 'http', operationKey: 'http.route' };
const ERROR: Cause = Object.freeze({ code: 'error' });

const headerGetter: TextMapGetter<IncomingHttpHeaders> = {
  get: (carrier, key) => carrier[key],
  keys: (carrier) => Object.keys(carrier),
};

// A symbol-keyed property rather than a WeakMap: cheaper per request, and it dies with the request.
// Registered symbols (`Symbol.for`), here and for the guard below: a second copy of ctxflow in the
// process sees the request accepted and guarded by the first, and only narrows it.
const CALL = Symbol.for('ctxflow.http.call.v1');
// Set when the handler's error ends the context (after answering it): `downstream` for a callee's
// end it passed on (a rethrown context error), `local` for any other error.
const ENDED_BY_HANDLER = Symbol.for('ctxflow.http.ended-by-handler.v1');
type WithCall = IncomingMessage & { [CALL]?: InboundCall; [ENDED_BY_HANDLER]?: CauseSource };

/**
 * The route template that served a request (express's `req.baseUrl` + `req.route.path`), for
 * metrics: never the raw URL, which the client chooses. Undefined without a router.
 */
function routeOf(req: IncomingMessage): string | undefined {
  const { route, baseUrl } = req as { route?: { path?: unknown }; baseUrl?: unknown };
  const path = route?.path;
  if (typeof path !== 'string') return undefined;
  return typeof baseUrl === 'string' ? baseUrl + path : path;
}

/** The context of a request, for code that holds the request but runs outside its handler. */
export function contextOf(req: IncomingMessage): Context | undefined {
  return (req as WithCall)[CALL]?.scope;
}

/**
 * Starts each request's context; the core of `withDeadlines` and of express's `deadlines()`.
 * The returned function gives the OpenTelemetry context to run the request's handler in, or
 * undefined when the request was shed (already answered 504). Its `budgetMs`, when given, is the
 * request's own in place of `options.budgetMs` (undefined: none), for a budget chosen per request.
 * @internal For ctxflow's HTTP framework layers.
 */
export function requestContexts(
  options: ServerOptions = {},
): (req: IncomingMessage, res: ServerResponse, budgetMs?: number) => OtelContext | undefined {
  ensureContextManager();
  checkForeignHeaders(options.foreignHeaders);
  const minBudgetMs = options.minBudgetMs ?? DEFAULT_RESERVE_MS;
  const useSignal = options.disconnect === 'signal' && 'signal' in http.IncomingMessage.prototype;
  guardServerResponses();

  return function accept(req, res, budgetMs = options.budgetMs) {
    const outer = (req as WithCall)[CALL];
    if (outer !== undefined) return narrow(outer, budgetMs);
    const inbound = budgetMs === options.budgetMs ? options : { ...options, budgetMs };
    const call = acceptInbound(req.headers, headerGetter, inbound, undefined, HTTP);
    (req as WithCall)[CALL] = call;
    // The HTTP server span (instrumentation-http), not the span of a middleware (instrumentation-express).
    call.trace(rpcServerSpan(call.otelContext) ?? trace.getSpan(call.otelContext));
    const shed = call.shed(minBudgetMs);
    if (shed !== undefined) {
      reply(res, shed);
      return undefined;
    }
    const signal = useSignal ? (req as { signal?: AbortSignal }).signal : undefined;
    if (signal !== undefined) {
      if (signal.aborted) {
        call.callerGone();
        call.finish(false);
        return undefined;
      }
      signal.addEventListener('abort', () => callerGone(req, call));
    }
    call.ctx.onDone((error) => {
      // Ended by the handler's error (already answered, perhaps already flushed), or before the
      // response was complete: what the request died of, counted now.
      const byHandler = (req as WithCall)[ENDED_BY_HANDLER];
      if (byHandler === undefined && res.writableFinished) return;
      routed(call, req).countEnd(byHandler ?? 'local');
      reply(res, error);
    });
    guard(res, call);
    watchEnd(req, res, call);
    return call.otelContext;
  };
}

/** The request's call with the route that served it in its metric attributes, once routing has found it. */
function routed(call: InboundCall, req: IncomingMessage): InboundCall {
  const route = routeOf(req);
  if (route !== undefined) call.attributes = hopAttributes(HTTP, route);
  return call;
}

function callerGone(req: IncomingMessage, call: InboundCall): void {
  routed(call, req).callerGone();
}

/**
 * A request another layer accepted already (`init()`, an app-wide `deadlines()`, `withDeadlines`,
 * another copy of ctxflow): nothing is accepted twice (no second context from the headers, guard,
 * metric or span attributes). A tighter `budgetMs` narrows the request's context to a child, which
 * becomes the request's context; its end ends the outer one, which answers 504 with the cause,
 * once. Undefined when the request has ended already (answered, or its client gone).
 */
function narrow(call: InboundCall, budgetMs: number | undefined): OtelContext | undefined {
  const before = call.scope;
  const ctx = call.narrow(budgetMs);
  if (ctx.done) return undefined;
  const active = otel.active();
  if (ctx === before && getContext(active) === ctx) return active;
  return setContext(active, ctx);
}

/**
 * Finishes the call once the response is complete or its connection goes away first, whichever
 * comes (the caller gone, when the response was not complete), with one listener function per
 * request. Listeners on `res` die with the request: nothing to remove there. On node:http the end
 * is the response's 'finish' and the caller going away its connection's 'close' (removed at
 * 'finish'), not a 'close' listener on the response: beside the one instrumentation-http puts
 * there, a second made every young-generation collection about twice as slow (measured: about
 * 15 µs per request). Either way first in line, so the cancellation is recorded before
 * instrumentation-http ends the server span on the response's 'close' (which Node emits from the
 * connection's).
 */
function watchEnd(req: IncomingMessage, res: ServerResponse, call: InboundCall): void {
  const socket = res.socket;
  // HTTP/2's compatibility response has a proxy of the session's socket: its own 'close' it is.
  const onSocket = res instanceof http.ServerResponse && socket !== null;
  let done = false;
  const ended = (): void => {
    if (done) return;
    done = true;
    if (onSocket) socket.removeListener('close', ended);
    const complete = res.writableFinished;
    const finished = routed(call, req);
    if (!complete) finished.callerGone();
    finished.finish(complete);
  };
  if (!onSocket) {
    addPlainListener(res, 'close', ended, true);
    return;
  }
  socket.prependListener('close', ended);
  addPlainListener(res, 'finish', ended, true);
}

/**
 * Wraps a plain node:http handler (`http.createServer(withDeadlines(handler, options))`): each
 * request runs in its context (`current()`), as with express's `deadlines()`; an error the handler
 * throws or rejects with is answered as `errorHandler()` answers it.
 */
export function withDeadlines(
  handler: RequestHandler,
  options: HandlerOptions = {},
): (req: IncomingMessage, res: ServerResponse) => void {
  const accept = requestContexts(options);
  const onError = options.onError ?? reportError;
  const fail = (error: unknown, req: IncomingMessage, res: ServerResponse) =>
    answerError(error, req, res, onError);
  return function ctxflowHandler(req, res) {
    const otelContext = accept(req, res);
    if (otelContext === undefined) return;
    otel.with(otelContext, () => {
      try {
        const result = handler(req, res);
        if (isThenable(result)) result.then(undefined, (error: unknown) => fail(error, req, res));
      } catch (error) {
        fail(error, req, res);
      }
    });
  };
}

/**
 * Answers a handler's error. A context's end (`DeadlineExceededError`, `CancelledError`, e.g. from
 * a downstream call) is answered with its status and `ctx-cancel-reason` and ends the request's
 * context with its cause; any other error with its `status` (4xx/5xx) or 500, reported to
 * `onError`, and the request's context is cancelled with cause `error` so the work it started stops.
 * @internal For ctxflow's HTTP framework layers.
 */
export function answerError(
  error: unknown,
  req: IncomingMessage,
  res: ServerResponse,
  onError: ErrorReporter,
): void {
  const ctx = (req as WithCall)[CALL]?.scope;
  // Answer first, then end the context: its end would otherwise answer with its own status.
  if (error instanceof ContextDoneError) {
    reply(res, error);
    if (ctx !== undefined && !ctx.done) {
      // A callee's end, passed on by the handler: not this hop's own.
      (req as WithCall)[ENDED_BY_HANDLER] = 'downstream';
      ctx.cancel(error.cause);
    }
    return;
  }
  // Once the context has ended, errors are mostly its aftermath (writing after a 504): not reported.
  if (ctx === undefined || !ctx.done) onError(error, req);
  if (res.headersSent) {
    // Mid-body: the client must not take a truncated response for a whole one.
    if (!res.writableEnded) res.destroy();
  } else if (!res.destroyed) {
    const status = statusOf(error);
    res.statusCode = status;
    res.removeHeader('content-length');
    res.setHeader('content-type', 'text/plain; charset=utf-8');
    answerWith(res, http.STATUS_CODES[status] ?? 'Error');
  }
  if (ctx !== undefined && !ctx.done) {
    (req as WithCall)[ENDED_BY_HANDLER] = 'local';
    ctx.cancel(ERROR);
  }
}

let defaultLog: ((error: unknown) => void) | undefined;

/**
 * The default error reporter: `errorLogger()` to stderr (each distinct error's stack once, then a
 * count of its repeats per minute), nothing when NODE_ENV is `test`, as express does.
 */
export function reportError(error: unknown): void {
  if (process.env.NODE_ENV === 'test') return;
  defaultLog ??= errorLogger();
  defaultLog(error);
}

function statusOf(error: unknown): number {
  if (typeof error === 'object' && error !== null) {
    const { status, statusCode } = error as { status?: unknown; statusCode?: unknown };
    for (const value of [status, statusCode]) {
      if (typeof value === 'number' && value >= 400 && value < 600) return value;
    }
  }
  return 500;
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return (
    typeof value === 'object' && value !== null && typeof (value as PromiseLike<unknown>).then === 'function'
  );
}

// The write and end a guard replaced, kept beside it: on node:http's ServerResponse.prototype for
// every response of node:http, on the response itself for any other (HTTP/2's compatibility layer).
// Registered symbols: a second copy of ctxflow finds the prototype guarded and leaves it as it is.
const WRITE = Symbol.for('ctxflow.http.write.v2');
const END = Symbol.for('ctxflow.http.end.v2');
// On a response guarded by itself (not by its prototype): the call it answers for.
const GUARDED = Symbol.for('ctxflow.http.guarded.v2');
// Set when ctxflow answered the response (its context's end).
const ANSWERED = Symbol.for('ctxflow.http.answered.v1');
// Set while ctxflow writes an answer of its own, which the guard lets through.
const OWN_ANSWER = Symbol.for('ctxflow.http.own-answer.v2');
type Guarded = ServerResponse & {
  [GUARDED]?: InboundCall;
  [WRITE]: GuardedWrite;
  [END]: GuardedEnd;
  [ANSWERED]?: true;
  [OWN_ANSWER]?: true;
};
type GuardedWrite = (this: ServerResponse, chunk: unknown, encoding: unknown, callback: unknown) => boolean;
type GuardedEnd = (
  this: ServerResponse,
  chunk: unknown,
  encoding: unknown,
  callback: unknown,
) => ServerResponse;

/**
 * Guards node:http's responses from their prototype, once per process: its write and end check
 * the response's call (`res.req`'s) and delegate at once when there is none (a response of a
 * server or route without ctxflow). Nothing is set on a response per request, so Node's own code
 * keeps seeing responses of one shape; express's per-app prototypes inherit the guard.
 */
function guardServerResponses(): void {
  const proto = http.ServerResponse.prototype as unknown as Record<PropertyKey, unknown>;
  if (Object.hasOwn(proto, WRITE)) return;
  proto[WRITE] = proto.write;
  proto[END] = proto.end;
  proto.write = guardedWrite;
  proto.end = guardedEnd;
}

/**
 * Makes a response begun after the call's context ended (by its clock, even before its timer
 * fired) the answer for the context's end instead of the handler's, and drops what the handler
 * writes after that. A response of node:http is guarded by its prototype (`guardServerResponses`);
 * any other gets the same shared functions on itself.
 */
function guard(res: ServerResponse, call: InboundCall): void {
  if ((res as unknown) instanceof http.ServerResponse) return;
  const guarded = res as Guarded;
  guarded[GUARDED] = call;
  guarded[WRITE] = res.write as GuardedWrite;
  guarded[END] = res.end as unknown as GuardedEnd;
  res.write = guardedWrite as unknown as ServerResponse['write'];
  res.end = guardedEnd as unknown as ServerResponse['end'];
}

/** The call a guarded response answers for, if any. */
function callOf(res: Partial<Guarded>): InboundCall | undefined {
  return res[GUARDED] ?? (res.req as WithCall | undefined)?.[CALL];
}

/** True when the response must not carry what the handler writes: its context ended first. */
function overtaken(res: Guarded): boolean {
  if (res.headersSent && !res.writableEnded) return false;
  const call = callOf(res);
  if (call === undefined) return false;
  const error = call.scope.error;
  if (error === undefined) return false;
  if (!res.headersSent) {
    if (res[OWN_ANSWER] === true) return false;
    reply(res, error);
  } else if (res[ANSWERED] === true) call.late();
  return true;
}

/**
 * What a response's header methods become once ctxflow has answered: the handler's header calls
 * are dropped quietly, as its writes are, instead of throwing ERR_HTTP_HEADERS_SENT into it (and
 * from there into the framework's error log), and counted as a late answer. Installed only on a
 * response ctxflow answered.
 */
function lateHeaders(this: Partial<Guarded>): ServerResponse {
  callOf(this)?.late();
  return this as ServerResponse;
}

function silenceHeaders(res: ServerResponse): void {
  const late = lateHeaders as unknown as ServerResponse['setHeader'];
  res.setHeader = late;
  res.appendHeader = late as unknown as ServerResponse['appendHeader'];
  res.removeHeader = late as unknown as ServerResponse['removeHeader'];
  res.writeHead = late as unknown as ServerResponse['writeHead'];
  res.flushHeaders = late as unknown as ServerResponse['flushHeaders'];
}

// Named parameters rather than a rest array: these run for every response in the process.
// node:http's write and end take a missing argument and an undefined one alike.
function guardedWrite(this: Guarded, chunk: unknown, encoding?: unknown, callback?: unknown): boolean {
  if (overtaken(this)) return true;
  return this[WRITE].call(this, chunk, encoding, callback);
}

function guardedEnd(this: Guarded, chunk?: unknown, encoding?: unknown, callback?: unknown): ServerResponse {
  if (overtaken(this)) return this;
  return this[END].call(this, chunk, encoding, callback);
}

/**
 * Ends the response with ctxflow's own answer: through `res.end` (so that wrappers of it, such as an
 * instrumentation's, see it), past the guard.
 */
function answerWith(res: ServerResponse, body: string): void {
  (res as Guarded)[OWN_ANSWER] = true;
  res.end(body);
}

/** Answers a request whose context ended, unless a response is already under way or the client is gone. */
function reply(res: ServerResponse, error: ContextDoneError): void {
  if (res.headersSent || res.destroyed || res.writableEnded || res.socket?.destroyed) return;
  const cause = error.cause;
  res.statusCode = httpStatusFor(cause.code);
  res.removeHeader('content-length');
  res.setHeader(CANCEL_REASON_HEADER, encodeCause(cause));
  res.setHeader('content-type', 'text/plain; charset=utf-8');
  answerWith(res, cause.code);
  (res as Partial<Guarded>)[ANSWERED] = true;
  silenceHeaders(res);
}
