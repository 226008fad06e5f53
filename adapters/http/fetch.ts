/**
 * `ctxflow/fetch`: the global `fetch` under a context, sending its trace and budget and aborting
 * with it.
 */
import { channel } from 'node:diagnostics_channel';
import { propagation } from '@opentelemetry/api';
import { type Context, current } from '../../sdk/index.ts';
import {
  CANCEL_REASON_HEADER,
  httpFallbackCause,
  type OutboundHeaders,
  type OutboundOptions,
  type OutboundSetter,
  remoteError,
  startOutbound,
  TIMEOUT_HEADER,
} from '../../sdk/wire.ts';

/** `fetch`'s RequestInit, plus the context to send under and how to write its budget. */
export interface ContextRequestInit extends RequestInit, OutboundOptions {
  /** The context whose trace, deadline and cancellation the request carries. Default `current()`. */
  ctx?: Context;
}

const globalFetch = globalThis.fetch;

// instrumentation-undici listens here and appends the global propagator's headers to the request:
// sending them both ways would repeat them (and receivers refuse repeated values).
const undiciRequestCreated = channel('undici:request:create');
const TRACEPARENT = 'traceparent';
const NO_OPTIONS: OutboundOptions = {};

function noop(): void {}

const headersSetter: OutboundSetter<Headers> = {
  set: (carrier, key, value) => carrier.set(key, value),
  get: (carrier, key) => carrier.get(key) ?? undefined,
};

/**
 * Which ctxflow headers this request writes itself. With instrumentation-undici active and a
 * global propagator that writes `traceparent`, the instrumentation adds that propagator's headers
 * (traceparent from its client span; the budget too when DeadlinePropagator is part of it): those
 * are left to it, and copies the caller passed are removed.
 */
function ownHeaders(headers: Headers, callerHeaders: boolean): OutboundHeaders {
  if (!undiciRequestCreated.hasSubscribers) return 'all';
  const delegated = propagation.fields();
  if (!delegated.includes(TRACEPARENT)) return 'all';
  if (callerHeaders) for (const field of delegated) headers.delete(field);
  return delegated.includes(TIMEOUT_HEADER) ? 'none' : 'budget';
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
  const { ctx: explicit, reserveMs, sendDeadline, alsoSend, ...rest } = init ?? {};
  const ctx = explicit ?? current();
  const request = input instanceof Request ? input : undefined;
  const callerHeaders = rest.headers ?? request?.headers;
  const headers = new Headers(callerHeaders);
  const options =
    reserveMs === undefined && sendDeadline === undefined && alsoSend === undefined
      ? NO_OPTIONS
      : { reserveMs, sendDeadline, alsoSend };

  // One AbortController per request, linked to the context and to the caller's signal by one
  // listener each, both removed when the request settles (no AbortSignal.any: it leaks).
  const controller = new AbortController();
  const unlinkContext = startOutbound(
    ctx,
    headers,
    headersSetter,
    (error) => controller.abort(error),
    options,
    ctx.deadline,
    ownHeaders(headers, callerHeaders !== undefined),
  );
  const callerSignal = rest.signal ?? request?.signal;
  let onCallerAbort: (() => void) | undefined;
  if (callerSignal != null) {
    if (callerSignal.aborted) {
      unlinkContext();
      throw callerSignal.reason;
    }
    onCallerAbort = () => controller.abort(callerSignal.reason);
    callerSignal.addEventListener('abort', onCallerAbort);
  }

  const forwarded: RequestInit = { ...rest, headers, signal: controller.signal };
  try {
    const response = await (current() === ctx
      ? globalFetch(input, forwarded)
      : ctx.run(() => globalFetch(input, forwarded)));
    const fallback = httpFallbackCause(response.status);
    const reason = fallback === undefined ? null : response.headers.get(CANCEL_REASON_HEADER);
    if (fallback !== undefined && reason !== null) {
      response.body?.cancel().catch(noop);
      throw remoteError(reason, fallback);
    }
    return response;
  } catch (error) {
    // Classify by our own signal: whoever aborted it gave the reason to reject with.
    if (controller.signal.aborted) throw controller.signal.reason;
    throw error;
  } finally {
    unlinkContext();
    if (onCallerAbort !== undefined) callerSignal?.removeEventListener('abort', onCallerAbort);
  }
}
