import http, { type ClientRequest, type IncomingMessage, type OutgoingHttpHeaders } from 'node:http';
import https from 'node:https';
import type { TextMapGetter, TextMapSetter } from '@opentelemetry/api';
import { background, type Context, current } from '../sdk/context.ts';
import type { ContextDoneError } from '../sdk/errors.ts';
import { type ForeignOutboundHeader, injectForeign } from '../sdk/foreign.ts';
import { injectContext } from '../sdk/propagation.ts';
import { CANCEL_REASON_HEADER, remoteError, type WireOptions } from '../sdk/wire.ts';

/** node:http request options, plus the context to send under and how to write its budget. */
export interface ContextRequestOptions
  extends https.RequestOptions,
    Pick<WireOptions, 'reserveMs' | 'sendDeadline'> {
  /** The context whose trace, deadline and cancellation the request carries. Default `current()`. */
  ctx?: Context;
  /** Deadline headers of other stacks to write too, with the same budget (`grpc-timeout`, `connect-timeout-ms`). */
  alsoSend?: readonly ForeignOutboundHeader[];
}

type ResponseCallback = (res: IncomingMessage) => void;

const BACKGROUND = background();

const headerSetter: TextMapSetter<OutgoingHttpHeaders> = {
  set: (carrier, key, value) => {
    carrier[key] = value;
  },
};

const headerGetter: TextMapGetter<OutgoingHttpHeaders> = {
  get: (carrier, key) => {
    const value = carrier[key];
    return typeof value === 'number' ? String(value) : value;
  },
  keys: (carrier) => Object.keys(carrier),
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
  ctx.throwIfDone();

  const headers = copyHeaders(options.headers);
  const wire = { reserveMs, sendDeadline };
  injectContext(ctx, headers, headerSetter, wire);
  if (alsoSend !== undefined && ctx.deadline !== undefined)
    injectForeign(headers, headerGetter, headerSetter, alsoSend, ctx.deadline, reserveMs);
  options.headers = headers;

  const secure = (url === undefined ? options.protocol : new URL(url).protocol) === 'https:';
  const send = (): ClientRequest => {
    const transport = secure ? https : http;
    return url === undefined
      ? transport.request(options, callback)
      : transport.request(url, options, callback);
  };
  const req = current() === ctx ? send() : ctx.run(send);
  if (ctx !== BACKGROUND) {
    const unlink = ctx.onDone((error) => req.destroy(error));
    req.once('close', unlink);
  }
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
  const status = res.statusCode;
  if (status !== 504 && status !== 503 && status !== 499) return undefined;
  const reason = res.headers[CANCEL_REASON_HEADER];
  if (reason === undefined) return undefined;
  return remoteError(reason, status === 504 ? 'deadline_exceeded' : 'cancelled');
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
