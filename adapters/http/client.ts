import type { ClientRequest, IncomingMessage, OutgoingHttpHeaders } from 'node:http';
import type { RequestOptions } from 'node:https';
import { type Context, type ContextDoneError, current } from '../../sdk/index.ts';
import {
  CANCEL_REASON_HEADER,
  httpFallbackCause,
  type OutboundOptions,
  type OutboundSetter,
  remoteError,
  startOutbound,
} from '../../sdk/wire.ts';

/** node:http request options, plus the context to send under and how to write its budget. */
export interface ContextRequestOptions extends RequestOptions, OutboundOptions {
  /** The context whose trace, deadline and cancellation the request carries. Default `current()`. */
  ctx?: Context;
}

type ResponseCallback = (res: IncomingMessage) => void;

// Not imported: the ES module facade of node:http reads every export, its lazy WebSocket getters
// too, which loads Node's bundled undici (about 40 ms at start-up); node:https (and node:tls) is
// loaded only for the first https: request.
const http = process.getBuiltinModule('node:http');

const headerSetter: OutboundSetter<OutgoingHttpHeaders> = {
  set: (carrier, key, value) => {
    carrier[key] = value;
  },
  get: (carrier, key) => {
    const value = carrier[key];
    return typeof value === 'number' ? String(value) : value;
  },
};

/**
 * `http.request` (or `https.request` for https: URLs) under a context (`options.ctx`, default
 * `current()`): throws the context's error when it is done, without any I/O; sends its trace and
 * remaining budget (minus the reserve); destroys the request with the context's error when the
 * context ends before the request closes (its 'error' event then carries the typed error).
 * Use `responseError(res)` to read a callee's `ctx-cancel-reason`.
 */
export function request(
  url: string | URL,
  options?: ContextRequestOptions,
  callback?: ResponseCallback,
): ClientRequest;
export function request(options: ContextRequestOptions, callback?: ResponseCallback): ClientRequest;
export function request(
  first: string | URL | ContextRequestOptions,
  second?: ContextRequestOptions | ResponseCallback,
  third?: ResponseCallback,
): ClientRequest {
  const url = typeof first === 'string' || first instanceof URL ? first : undefined;
  const given = (url === undefined ? first : typeof second === 'object' ? second : undefined) as
    | ContextRequestOptions
    | undefined;
  const callback = typeof second === 'function' ? second : third;
  const { ctx: explicit, reserveMs, sendDeadline, alsoSend, ...options } = given ?? {};
  const ctx = explicit ?? current();
  const headers = copyHeaders(options.headers);
  // Linked before the request exists: the context's end destroys it once it does.
  let req: ClientRequest | undefined;
  let endedBy: ContextDoneError | undefined;
  const unlink = startOutbound({
    ctx,
    carrier: headers,
    setter: headerSetter,
    abort: (error) => {
      endedBy = error;
      req?.destroy(error);
    },
    options: { reserveMs, sendDeadline, alsoSend },
  });
  options.headers = headers;

  const secure = (url === undefined ? options.protocol : new URL(url).protocol) === 'https:';
  const send = (): ClientRequest => {
    const transport = secure ? process.getBuiltinModule('node:https') : http;
    return url === undefined
      ? transport.request(options, callback)
      : transport.request(url, options, callback);
  };
  try {
    req = current() === ctx ? send() : ctx.run(send);
  } catch (error) {
    unlink();
    throw error;
  }
  req.once('close', unlink);
  if (endedBy !== undefined) req.destroy(endedBy);
  return req;
}

/** `request` followed by `end()`, like `http.get`. */
export function get(
  url: string | URL,
  options?: ContextRequestOptions,
  callback?: ResponseCallback,
): ClientRequest {
  const req = request(url, { ...options, method: 'GET' }, callback);
  req.end();
  return req;
}

/**
 * The typed error a response reports when the callee's context ended (a 504, 503 or 499 with
 * `ctx-cancel-reason`), or undefined for any other response.
 */
export function responseError(res: IncomingMessage): ContextDoneError | undefined {
  const fallback = httpFallbackCause(res.statusCode ?? 0);
  const reason = fallback === undefined ? undefined : res.headers[CANCEL_REASON_HEADER];
  return fallback === undefined || reason === undefined ? undefined : remoteError(reason, fallback);
}

/** A lower-cased copy of request headers, so ours replace the caller's rather than repeat them. */
function copyHeaders(headers: ContextRequestOptions['headers']): OutgoingHttpHeaders {
  const copy: OutgoingHttpHeaders = {};
  if (headers === undefined) return copy;
  if (Array.isArray(headers)) {
    for (let i = 0; i + 1 < headers.length; i += 2) {
      const key = String(headers[i]).toLowerCase();
      const value = headers[i + 1] as string;
      const previous = copy[key];
      copy[key] =
        previous === undefined
          ? value
          : Array.isArray(previous)
            ? [...previous, value]
            : [String(previous), value];
    }
    return copy;
  }
  for (const [key, value] of Object.entries(headers)) copy[key.toLowerCase()] = value;
  return copy;
}
