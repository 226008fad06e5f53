import { channel } from 'node:diagnostics_channel';
import { propagation, type TextMapGetter, type TextMapSetter } from '@opentelemetry/api';
import { background, type Context, current } from '../sdk/context.ts';
import { type ForeignOutboundHeader, injectForeign } from '../sdk/foreign.ts';
import { injectContext, injectDeadline } from '../sdk/propagation.ts';
import { CANCEL_REASON_HEADER, remoteError, TIMEOUT_HEADER, type WireOptions } from '../sdk/wire.ts';

/** `fetch`'s RequestInit, plus the context to send under and how to write its budget. */
export interface ContextRequestInit extends RequestInit, Pick<WireOptions, 'reserveMs' | 'sendDeadline'> {
  /** The context whose trace, deadline and cancellation the request carries. Default `current()`. */
  ctx?: Context;
  /** Deadline headers of other stacks to write too, with the same budget (`grpc-timeout`, `connect-timeout-ms`). */
  alsoSend?: readonly ForeignOutboundHeader[];
}

const globalFetch = globalThis.fetch;
const BACKGROUND = background();

/** Statuses that, with a `ctx-cancel-reason` header, say the callee's context ended. */
const FALLBACK_CODE: Readonly<Record<number, string>> = {
  499: 'cancelled',
  503: 'cancelled',
  504: 'deadline_exceeded',
};

// instrumentation-undici listens here and appends the global propagator's headers to the request:
// sending them both ways would repeat them (and receivers refuse repeated values).
const undiciRequestCreated = channel('undici:request:create');
const TRACEPARENT = 'traceparent';
const NO_OPTIONS: WireOptions = {};

function noop(): void {}

const headersSetter: TextMapSetter<Headers> = {
  set: (carrier, key, value) => carrier.set(key, value),
};

const headersGetter: TextMapGetter<Headers> = {
  get: (carrier, key) => carrier.get(key) ?? undefined,
  keys: (carrier) => [...carrier.keys()],
};

/**
 * Writes the trace and deadline headers of `ctx` into `headers`. With instrumentation-undici active
 * and a global propagator that writes `traceparent`, the instrumentation adds that propagator's
 * headers itself (traceparent from its client span; the budget too when DeadlinePropagator is part
 * of it): those are left to it, and copies the caller passed are removed.
 */
function inject(ctx: Context, headers: Headers, options: WireOptions, callerHeaders: boolean): void {
  if (undiciRequestCreated.hasSubscribers) {
    const delegated = propagation.fields();
    if (delegated.includes(TRACEPARENT)) {
      if (callerHeaders) for (const field of delegated) headers.delete(field);
      if (!delegated.includes(TIMEOUT_HEADER)) injectDeadline(ctx, headers, headersSetter, options);
      return;
    }
  }
  injectContext(ctx, headers, headersSetter, options);
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
  ctx.throwIfDone();
  const request = input instanceof Request ? input : undefined;
  const callerHeaders = rest.headers ?? request?.headers;
  const headers = new Headers(callerHeaders);
  const wire =
    reserveMs === undefined && sendDeadline === undefined ? NO_OPTIONS : { reserveMs, sendDeadline };
  inject(ctx, headers, wire, callerHeaders !== undefined);
  if (alsoSend !== undefined && ctx.deadline !== undefined)
    injectForeign(headers, headersGetter, headersSetter, alsoSend, ctx.deadline, reserveMs);

  // One AbortController per request, linked to the context and to the caller's signal by one
  // listener each, both removed when the request settles (no AbortSignal.any: it leaks).
  const controller = new AbortController();
  const abortWith = (reason: unknown) => controller.abort(reason);
  const unlinkContext = ctx === BACKGROUND ? noop : ctx.onDone(abortWith);
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
    const fallback = FALLBACK_CODE[response.status];
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
