import { channel } from 'node:diagnostics_channel';
import { propagation, type TextMapSetter } from '@opentelemetry/api';
import { background, type Context, current } from '../sdk/context.ts';
import { injectContext } from '../sdk/propagation.ts';
import { CANCEL_REASON_HEADER, remoteError, type WireOptions } from '../sdk/wire.ts';

/** `fetch`'s RequestInit, plus the context to send under and how to write its budget. */
export interface ContextRequestInit extends RequestInit, Pick<WireOptions, 'reserveMs'> {
  /** The context whose trace, deadline and cancellation the request carries. Default `current()`. */
  ctx?: Context;
}

const globalFetch = globalThis.fetch;
const BACKGROUND = background();

/** Statuses that, with a `ctx-cancel-reason` header, say the callee's context ended. */
const FALLBACK_CODE: Readonly<Record<number, string>> = {
  499: 'cancelled',
  503: 'cancelled',
  504: 'deadline_exceeded',
};

// instrumentation-undici listens here and adds the global propagator's headers itself,
// appending to ours: sending them both ways would repeat them (and repeated values are rejected).
const undiciRequestCreated = channel('undici:request:create');

const recordSetter: TextMapSetter<Record<string, string>> = {
  set: (carrier, key, value) => {
    carrier[key] = value;
  },
};

function noop(): void {}

/** Writes the trace and deadline headers of `ctx` into `headers`, leaving to an undici instrumentation those it adds. */
function inject(ctx: Context, headers: Headers, reserveMs: number | undefined): void {
  const carrier: Record<string, string> = {};
  injectContext(ctx, carrier, recordSetter, reserveMs === undefined ? {} : { reserveMs });
  const delegated = undiciRequestCreated.hasSubscribers ? propagation.fields() : undefined;
  if (delegated !== undefined) for (const field of delegated) headers.delete(field);
  for (const key in carrier) {
    if (delegated === undefined || !delegated.includes(key)) headers.set(key, carrier[key] as string);
  }
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
  const ctx = init?.ctx ?? current();
  ctx.throwIfDone();
  const request = input instanceof Request ? input : undefined;
  const headers = new Headers(init?.headers ?? request?.headers);
  inject(ctx, headers, init?.reserveMs);

  // One AbortController per request, linked to the context and to the caller's signal by one
  // listener each, both removed when the request settles (no AbortSignal.any: it leaks).
  const controller = new AbortController();
  const abortWith = (reason: unknown) => controller.abort(reason);
  const unlinkContext = ctx === BACKGROUND ? noop : ctx.onDone(abortWith);
  const callerSignal = init?.signal ?? request?.signal;
  let onCallerAbort: (() => void) | undefined;
  if (callerSignal != null) {
    if (callerSignal.aborted) {
      unlinkContext();
      throw callerSignal.reason;
    }
    onCallerAbort = () => controller.abort(callerSignal.reason);
    callerSignal.addEventListener('abort', onCallerAbort);
  }

  const forwarded: RequestInit = { ...init, headers, signal: controller.signal };
  delete (forwarded as ContextRequestInit).ctx;
  delete (forwarded as ContextRequestInit).reserveMs;
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
