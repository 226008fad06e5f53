import { type IncomingHttpHeaders, IncomingMessage, type ServerResponse, STATUS_CODES } from 'node:http';
import { context as otel, type TextMapGetter, trace } from '@opentelemetry/api';
import { getRPCMetadata } from '@opentelemetry/core';
import type { Cause, CauseCode } from '../sdk/cause.ts';
import type { CancelableContext, Context } from '../sdk/context.ts';
import { ContextDoneError } from '../sdk/errors.ts';
import { checkForeignHeaders } from '../sdk/foreign.ts';
import { acceptInbound, type InboundOptions } from '../sdk/inbound.ts';
import { ensureContextManager } from '../sdk/scope.ts';
import { CANCEL_REASON_HEADER, DEFAULT_RESERVE_MS, encodeCause } from '../sdk/wire.ts';

/** Options of the `deadlines()` middleware; every field has a default. */
export interface DeadlineOptions extends InboundOptions {
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

/** Options of the `errorHandler()` middleware. */
export interface ErrorHandlerOptions {
  /**
   * Called with each handler error that is not a context's end (those are expected), unless the
   * request's context had already ended (writing after a 504 is its aftermath, not a new failure).
   * Default: print the stack to stderr unless NODE_ENV is `test`, as express does.
   */
  onError?: (error: unknown, req: IncomingMessage) => void;
}

/** The `next` function of express (4 or 5) and connect. */
export type Next = (error?: unknown) => void;

/** A context's end answered without running more of the chain: status per cause. */
const SHED: Cause = Object.freeze({ code: 'deadline_exceeded', message: 'budget below minimum' });
const ERROR: Cause = Object.freeze({ code: 'error' });
const BUDGET_ATTRIBUTE = 'ctxflow.budget_ms';
const CAUSE_ATTRIBUTE = 'ctxflow.cause';

const headerGetter: TextMapGetter<IncomingHttpHeaders> = {
  get: (carrier, key) => carrier[key],
  keys: (carrier) => Object.keys(carrier),
};

// A symbol-keyed property rather than a WeakMap: cheaper per request, and it dies with the request.
const CONTEXT = Symbol('ctxflow.context');
type WithContext = IncomingMessage & { [CONTEXT]?: CancelableContext };

/** The context `deadlines()` made for `req`, for code that holds the request but runs outside it. */
export function contextOf(req: IncomingMessage): Context | undefined {
  return (req as WithContext)[CONTEXT];
}

/** The HTTP status that reports a context ended with `code`. */
export function statusFor(code: CauseCode): number {
  switch (code) {
    case 'deadline_exceeded':
      return 504;
    case 'shutdown':
      return 503;
    case 'error':
      return 500;
    default:
      // The client closed the request or it was cancelled: nginx's "client closed request".
      return 499;
  }
}

/**
 * Express (5 or 4) and connect middleware giving every request a context: a deadline from the
 * caller's headers (when trusted), this service's `budgetMs` and the `maxInboundMs` cap; cancelled
 * when the client goes away, answered 504 when the deadline passes first, released when the
 * response is done. Handlers read it with `current()`. Install `errorHandler()` after the routes.
 */
export function deadlines(
  options: DeadlineOptions = {},
): (req: IncomingMessage, res: ServerResponse, next: Next) => void {
  ensureContextManager();
  checkForeignHeaders(options.foreignHeaders);
  const minBudgetMs = options.minBudgetMs ?? DEFAULT_RESERVE_MS;
  const useSignal = options.disconnect === 'signal' && 'signal' in IncomingMessage.prototype;

  return function ctxflowDeadlines(req, res, next) {
    const call = acceptInbound(req.headers, headerGetter, options);
    const ctx = call.ctx;
    // The HTTP server span (instrumentation-http), not the span of this middleware (instrumentation-express).
    const span = getRPCMetadata(call.otelContext)?.span ?? trace.getSpan(call.otelContext);
    if (ctx.deadline !== undefined) {
      const remaining = ctx.remaining();
      span?.setAttribute(BUDGET_ATTRIBUTE, remaining);
      if (remaining < minBudgetMs) {
        ctx.cancel(SHED);
        span?.setAttribute(CAUSE_ATTRIBUTE, SHED.code);
        reply(res, ctx.error as ContextDoneError);
        return;
      }
    }
    (req as WithContext)[CONTEXT] = ctx;
    const callerGone = call.callerGoneCause;
    const signal = useSignal ? (req as { signal?: AbortSignal }).signal : undefined;
    if (signal !== undefined) {
      if (signal.aborted) {
        ctx.cancel(callerGone);
        return;
      }
      signal.addEventListener('abort', () => ctx.cancel(callerGone));
    }
    ctx.onDone((error) => {
      if (res.writableFinished) return;
      span?.setAttribute(CAUSE_ATTRIBUTE, error.cause.code);
      reply(res, error);
    });
    guard(res, ctx);
    // 'close' follows a complete response too; before it, it means the connection went away.
    // Listeners on `res` and `req.signal` die with the request: nothing to remove.
    res.once('close', () => (res.writableFinished ? ctx.release() : ctx.cancel(callerGone)));
    otel.with(call.otelContext, next);
  };
}

/**
 * Express error middleware (four arguments) to install after the routes. A context's end
 * (`DeadlineExceededError`, `CancelledError`, e.g. from a downstream call) is answered with its
 * status and `ctx-cancel-reason`; any other error with its `status` (4xx/5xx) or 500, and the
 * request's context is cancelled with cause `error` so the work it started stops.
 */
export function errorHandler(
  options: ErrorHandlerOptions = {},
): (error: unknown, req: IncomingMessage, res: ServerResponse, next: Next) => void {
  const onError = options.onError ?? defaultOnError;
  // biome-ignore lint/correctness/noUnusedFunctionParameters: express tells error middleware by its four parameters
  return function ctxflowErrors(error, req, res, next) {
    const ctx = (req as WithContext)[CONTEXT];
    // Answer first, then end the context: its end would otherwise answer with its own status.
    if (error instanceof ContextDoneError) {
      reply(res, error);
      ctx?.cancel(error.cause);
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
      res.end(STATUS_CODES[status] ?? 'Error');
    }
    ctx?.cancel(ERROR);
  };
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

function defaultOnError(error: unknown): void {
  if (process.env.NODE_ENV === 'test') return;
  console.error(error instanceof Error ? (error.stack ?? error) : error);
}

// The response's own write and end, kept on it when guard() replaces them.
const WRITE = Symbol('ctxflow.write');
const END = Symbol('ctxflow.end');
const GUARDED = Symbol('ctxflow.context');
type Guarded = ServerResponse & {
  [GUARDED]: Context;
  [WRITE]: ServerResponse['write'];
  [END]: ServerResponse['end'];
};

/**
 * Makes a response begun after `ctx` ended (by its clock, even before its timer fired) the answer
 * for the context's end instead of the handler's, and drops what the handler writes after that.
 * Shared functions and symbol properties: no closure per request.
 */
function guard(res: ServerResponse, ctx: Context): void {
  const guarded = res as Guarded;
  guarded[GUARDED] = ctx;
  guarded[WRITE] = res.write;
  guarded[END] = res.end;
  res.write = guardedWrite as ServerResponse['write'];
  res.end = guardedEnd as ServerResponse['end'];
}

/** True when the response must not carry what the handler writes: its context ended first. */
function overtaken(res: Guarded): boolean {
  if (res.headersSent && !res.writableEnded) return false;
  const error = res[GUARDED].error;
  if (error === undefined) return false;
  if (!res.headersSent) reply(res, error);
  return true;
}

function guardedWrite(this: Guarded, ...args: Parameters<ServerResponse['write']>): boolean {
  if (overtaken(this)) return true;
  return this[WRITE].apply(this, args);
}

function guardedEnd(this: Guarded, ...args: Parameters<ServerResponse['end']>): ServerResponse {
  if (overtaken(this)) return this;
  return this[END].apply(this, args as never);
}

/** Answers a request whose context ended, unless a response is already under way or the client is gone. */
function reply(res: ServerResponse, error: ContextDoneError): void {
  if (res.headersSent || res.destroyed || res.writableEnded || res.socket?.destroyed) return;
  const cause = error.cause;
  res.statusCode = statusFor(cause.code);
  res.removeHeader('content-length');
  res.setHeader(CANCEL_REASON_HEADER, encodeCause(cause));
  res.setHeader('content-type', 'text/plain; charset=utf-8');
  Reflect.apply((res as Partial<Guarded>)[END] ?? res.end, res, [cause.code]);
}
