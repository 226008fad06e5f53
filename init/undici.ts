import { type ChannelListener, subscribe, unsubscribe } from 'node:diagnostics_channel';
import { context as otel } from '@opentelemetry/api';
import { isTracingSuppressed } from '@opentelemetry/core';
import { type ContextDoneError, current } from '../sdk/index.ts';
import { type OutboundSetter, startOutbound, TIMEOUT_HEADER } from '../sdk/wire.ts';
import { type HttpClientOptions, written } from './http.ts';

/** The parts of undici's request object (as diagnostics channels publish it) used here. */
interface UndiciRequest {
  /** `[name, value, name, value, ...]` (undici 6 and 7 in Node 22 and 24) or raw `name: value\r\n` lines. */
  headers: string[] | string;
  addHeader(name: string, value: string): unknown;
  /** Set once connected: aborts the request with the given error. */
  abort?: ((error: Error) => void) | null;
  /** Checked by undici when the request connects: the request fails with it instead. */
  error?: Error | null;
  aborted?: boolean;
  completed?: boolean;
  [UNLINK]?: () => void;
}

const UNLINK = Symbol('ctxflow.init.undici');
const CREATE = 'undici:request:create';
const DONE = ['undici:request:trailers', 'undici:request:error'];

/** A header's value, from either form of undici's header list. */
function headerValue(request: UndiciRequest, name: string): string | undefined {
  const headers = request.headers;
  if (typeof headers !== 'string') {
    for (let i = 0; i < headers.length; i += 2) {
      if (headers[i]?.toLowerCase() === name) return headers[i + 1];
    }
    return undefined;
  }
  for (const line of headers.split('\r\n')) {
    const colon = line.indexOf(':');
    if (colon > 0 && line.slice(0, colon).trim().toLowerCase() === name) return line.slice(colon + 1).trim();
  }
  return undefined;
}

/** Appends a header unless it is there already (instrumentation-undici adds the global propagator's). */
const requestSetter: OutboundSetter<UndiciRequest> = {
  set: (carrier, key, value) => {
    if (headerValue(carrier, key) === undefined) carrier.addHeader(key, value);
  },
  get: headerValue,
};

function abort(request: UndiciRequest, error: ContextDoneError): void {
  if (request.aborted === true || request.completed === true) return;
  if (typeof request.abort === 'function') request.abort(error);
  else request.error = error;
}

/**
 * Makes every request of undici (and so of the global `fetch`) carry the trace and remaining budget
 * of `current()`, and aborts it with the context's error when the context ends first. Uses undici's
 * diagnostics channels, published in the caller's async context, so the global dispatcher is left alone.
 */
export function watchUndici(options: HttpClientOptions): () => void {
  const onCreate: ChannelListener = (message) => {
    // The SDK's own exports (run with tracing suppressed) belong to no request, whatever context they inherit.
    if (isTracingSuppressed(otel.active())) return;
    const request = (message as { request: UndiciRequest }).request;
    try {
      request[UNLINK] = startOutbound(
        current(),
        request,
        requestSetter,
        (error) => abort(request, error),
        options,
        undefined,
        written(
          headerValue(request, TIMEOUT_HEADER) !== undefined,
          headerValue(request, 'traceparent') !== undefined,
        ),
      );
    } catch (error) {
      // The context has ended: undici fails the request with this error when it connects.
      request.error = error as ContextDoneError;
    }
  };
  const onDone: ChannelListener = (message) => {
    const request = (message as { request: UndiciRequest }).request;
    const unlink = request[UNLINK];
    if (unlink === undefined) return;
    request[UNLINK] = undefined;
    unlink();
  };
  subscribe(CREATE, onCreate);
  for (const name of DONE) subscribe(name, onDone);
  return () => {
    unsubscribe(CREATE, onCreate);
    for (const name of DONE) unsubscribe(name, onDone);
  };
}
