/**
 * undici's request as its diagnostics channels publish it, for the two ways ctxflow binds a
 * context to the global `fetch`: `ctxflow/fetch` and `init()`'s hook. Both write headers into the
 * request and abort it through its own `abort`, so no AbortSignal is made per request.
 * @internal
 */
import { createContextKey, type Context as OtelContext } from '@opentelemetry/api';

/** The parts of undici's request object (as diagnostics channels publish it) used here. */
export interface UndiciRequest {
  /** `[name, value, name, value, ...]` (undici 6 and 7 in Node 22 and 24) or raw `name: value\r\n` lines. */
  headers: string[] | string;
  addHeader(name: string, value: string): unknown;
  /** Set once connected: aborts the request with the given error. */
  abort?: ((error: Error) => void) | null;
  /** Checked by undici when the request connects: the request fails with it instead. */
  error?: Error | null;
  aborted?: boolean;
  completed?: boolean;
}

/** Published for each request undici makes, in the async context of the code that made it. */
export const REQUEST_CREATED = 'undici:request:create';

/**
 * The OpenTelemetry context key under which `ctxflow/fetch` runs the global fetch: requests made
 * there are bound by it, and `init()`'s hook leaves them alone.
 */
export const FETCH_CALL = createContextKey('ctxflow.fetch.call');

/** True when the request is made by a `ctxflow/fetch` call (its own listener binds it). */
export function madeByFetch(otelContext: OtelContext): boolean {
  return otelContext.getValue(FETCH_CALL) !== undefined;
}

/** True when a header name (of any case) is `lower`, a lower-case name: most are lower-case already. */
function isHeader(name: string | undefined, lower: string): boolean {
  return name === lower || (name?.length === lower.length && name.toLowerCase() === lower);
}

function lineName(line: string): string {
  const colon = line.indexOf(':');
  return colon > 0 ? line.slice(0, colon).trim().toLowerCase() : '';
}

/** A header's first value, from either form of undici's header list. */
export function headerValue(request: UndiciRequest, name: string): string | undefined {
  const headers = request.headers;
  if (typeof headers !== 'string') {
    for (let i = 0; i < headers.length; i += 2) {
      if (isHeader(headers[i], name)) return headers[i + 1];
    }
    return undefined;
  }
  for (const line of headers.split('\r\n')) {
    if (lineName(line) === name) return line.slice(line.indexOf(':') + 1).trim();
  }
  return undefined;
}

/** Removes every value of a header but the last `keep` ones (0: all of them). */
export function dropHeader(request: UndiciRequest, name: string, keep = 0): void {
  const headers = request.headers;
  if (typeof headers !== 'string') {
    let seen = 0;
    for (let i = headers.length - 2; i >= 0; i -= 2) {
      if (isHeader(headers[i], name) && ++seen > keep) headers.splice(i, 2);
    }
    return;
  }
  const lines = headers.split('\r\n');
  let seen = 0;
  for (let i = lines.length - 1; i >= 0; i--) {
    if (lineName(lines[i] as string) === name && ++seen > keep) lines.splice(i, 1);
  }
  request.headers = lines.join('\r\n');
}

/** Aborts the request with `error`: at once when connected, else when it connects. */
export function abortRequest(request: UndiciRequest, error: Error): void {
  if (request.aborted === true || request.completed === true) return;
  if (typeof request.abort === 'function') request.abort(error);
  else request.error = error;
}
