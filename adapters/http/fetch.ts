/**
 * `ctxflow/fetch`: the global `fetch` under a context, sending its trace and budget and aborting
 * with it.
 */
import { subscribe } from 'node:diagnostics_channel';
import { context as otel } from '@opentelemetry/api';
import { background, type Context, type ContextDoneError, getContext, setContext } from '../../sdk/index.ts';
import {
  CANCEL_REASON_HEADER,
  httpFallbackCause,
  type OutboundOptions,
  type OutboundSetter,
  remoteError,
  startOutbound,
  withValue,
} from '../../sdk/wire.ts';
import {
  abortRequest,
  dropHeader,
  FETCH_CALL,
  headerValue,
  REQUEST_CREATED,
  type UndiciRequest,
} from './undici.ts';

/** `fetch`'s RequestInit, plus the context to send under and how to write its budget. */
export interface ContextRequestInit extends RequestInit, OutboundOptions {
  /** The context whose trace, deadline and cancellation the request carries. Default `current()`. */
  ctx?: Context;
}

/** One call of `fetch`: what its requests (the first, and any redirect) are bound to. */
interface Call {
  readonly ctx: Context;
  readonly options: OutboundOptions;
  /** What the call rejects with once aborted: the context's error, or the caller's signal's reason. */
  abortedWith: unknown;
  /** The request in flight. */
  request: UndiciRequest | undefined;
  /** Unlinks the current request from the context. */
  unlink: (() => void) | undefined;
}

const globalFetch = globalThis.fetch;
const TRACEPARENT = 'traceparent';
const NO_OPTIONS: OutboundOptions = {};

function noop(): void {}

/** Writes a header in place of any value already there (the caller's, an instrumentation's). */
const replacingSetter: OutboundSetter<UndiciRequest> = {
  set: (carrier, key, value) => {
    dropHeader(carrier, key);
    carrier.addHeader(key, value);
  },
  get: headerValue,
};

/**
 * Binds each request undici makes for a ctxflow fetch call to the call's context: its budget
 * headers, its trace headers unless an instrumentation (instrumentation-undici, listening on the
 * same channel before us) wrote them already, and its abort.
 */
function bindRequest(request: UndiciRequest): void {
  const call = otel.active().getValue(FETCH_CALL) as Call | undefined;
  if (call === undefined) return;
  // A redirect: the previous request is over.
  call.unlink?.();
  call.request = request;
  if (call.abortedWith !== undefined) {
    request.error = call.abortedWith as Error;
    return;
  }
  // An instrumentation's traceparent was added after any the caller passed: the last one is its.
  dropHeader(request, TRACEPARENT, 1);
  try {
    call.unlink = startOutbound({
      ctx: call.ctx,
      carrier: request,
      setter: replacingSetter,
      abort: (error) => abort(call, error),
      options: call.options,
      headers: headerValue(request, TRACEPARENT) === undefined ? 'all' : 'budget',
    });
  } catch (error) {
    // The context ended after fetch was called: undici fails the request with this error.
    call.abortedWith = error;
    request.error = error as ContextDoneError;
  }
}

/** Ends the call's request with `reason` (the first reason wins), and the call with it. */
function abort(call: Call, reason: unknown): void {
  if (call.abortedWith !== undefined) return;
  call.abortedWith = reason;
  if (call.request !== undefined) abortRequest(call.request, reason as Error);
}

let listening = false;

/**
 * Listens on undici's request channel from the first call on: by then a tracing SDK started at
 * start-up has its instrumentation listening first, and its headers are there when ours are written.
 */
function listen(): void {
  if (listening) return;
  listening = true;
  subscribe(REQUEST_CREATED, (message) => bindRequest((message as { request: UndiciRequest }).request));
}

/**
 * The global `fetch`, under a context (`init.ctx`, default `current()`): refuses to send when the
 * context is done (rejects with its error), sends its trace and remaining budget (minus the reserve),
 * aborts when the context ends (rejecting with the context's error) or when `init.signal` aborts
 * (with that signal's reason), and turns a 504/503/499 answer carrying `ctx-cancel-reason` into the
 * typed error it reports (`DeadlineExceededError`, `CancelledError`). Once the response headers
 * are in, reading the body is no longer tied to the context.
 */
export async function fetch(input: string | URL | Request, init?: ContextRequestInit): Promise<Response> {
  listen();
  const active = otel.active();
  const activeCtx = getContext(active) ?? background();
  const ctx = init?.ctx ?? activeCtx;
  ctx.throwIfDone();
  let forwarded: RequestInit | undefined = init;
  let options = NO_OPTIONS;
  if (init !== undefined) {
    const { ctx: _ctx, reserveMs, sendDeadline, alsoSend, ...rest } = init;
    forwarded = rest;
    if (reserveMs !== undefined || sendDeadline !== undefined || alsoSend !== undefined) {
      options = { reserveMs, sendDeadline, alsoSend };
    }
  }
  const call: Call = { ctx, options, abortedWith: undefined, request: undefined, unlink: undefined };
  // The caller's signal is followed here, by one listener removed when the call settles: undici's
  // own following keeps a listener on it until garbage collection.
  const callerSignal = init?.signal ?? (input instanceof Request ? input.signal : undefined);
  let onCallerAbort: (() => void) | undefined;
  if (callerSignal != null) {
    callerSignal.throwIfAborted();
    onCallerAbort = () => abort(call, callerSignal.reason);
    callerSignal.addEventListener('abort', onCallerAbort);
    forwarded = { ...forwarded, signal: null };
  }
  const base = ctx === activeCtx ? active : setContext(active, ctx);
  try {
    const response = await otel.with(
      withValue(base, FETCH_CALL, call),
      globalFetch,
      undefined,
      input,
      forwarded,
    );
    const fallback = httpFallbackCause(response.status);
    const reason = fallback === undefined ? null : response.headers.get(CANCEL_REASON_HEADER);
    if (fallback !== undefined && reason !== null) {
      response.body?.cancel().catch(noop);
      throw remoteError(reason, fallback);
    }
    return response;
  } catch (error) {
    // undici reports an abort of ours as a network error: the reason given says what happened.
    throw call.abortedWith ?? error;
  } finally {
    call.unlink?.();
    if (onCallerAbort !== undefined) callerSignal?.removeEventListener('abort', onCallerAbort);
  }
}
