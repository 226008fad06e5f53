/**
 * HTTP/2 settings of grpc-js servers that cancellation makes matter: the stream-reset rate limit
 * (Node's rapid-reset guard, CVE-2023-44487), which grpc-js's `Server` does not pass through.
 */

import * as grpc from '@grpc/grpc-js';
import { diag } from '@opentelemetry/api';

/**
 * The stream-reset rate limit of each HTTP/2 session: a token bucket of `streamResetBurst` client
 * RST_STREAM frames, refilled by `streamResetRate` per second. A client that resets faster gets
 * GOAWAY(INTERNAL_ERROR) and every call in flight on its connection fails. Node's defaults
 * (nghttp2's): 1000 and 33.
 */
export interface ResetGuard {
  streamResetBurst: number;
  streamResetRate: number;
}

/**
 * The limit `resetGuard()` sets by default: a burst of 10 000 resets, then 1 000 per second per
 * connection, about three times the cancellation rate a busy ctxflow client produces (300 per
 * second in our soak), and still a hard bound on a client that only opens and resets streams.
 */
export const DEFAULT_RESET_GUARD: Readonly<ResetGuard> = Object.freeze({
  streamResetBurst: 10_000,
  streamResetRate: 1_000,
});

/** The http2 server options a grpc-js Server builds in its constructor and uses at each bind. */
type WithHttp2Options = {
  commonServerOptions?: Record<string, unknown>;
  http2Servers?: Map<unknown, unknown>;
};

function checkedLimit(name: keyof ResetGuard, value: unknown): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1) {
    throw new RangeError(`ctxflow/grpc: ${name} must be a positive integer, got ${String(value)}`);
  }
  return value;
}

/**
 * Sets the stream-reset rate limit of the HTTP/2 sessions `server` accepts from now on; call it
 * before `bindAsync` (each bind reads the settings). grpc-js (1.10.4 to 1.14.7 at least) keeps the
 * options it hands to `http2.createServer` in a field of its own: when that field is missing (a
 * grpc-js that changed it), this logs a warning and leaves the server as it is. Throws a
 * RangeError for a limit that is not a positive integer. Returns `server`.
 */
export function resetGuard(server: grpc.Server, limits: Partial<ResetGuard> = {}): grpc.Server {
  const streamResetBurst = checkedLimit(
    'streamResetBurst',
    limits.streamResetBurst ?? DEFAULT_RESET_GUARD.streamResetBurst,
  );
  const streamResetRate = checkedLimit(
    'streamResetRate',
    limits.streamResetRate ?? DEFAULT_RESET_GUARD.streamResetRate,
  );
  const internals = server as unknown as WithHttp2Options;
  const options = internals.commonServerOptions;
  if (typeof options !== 'object' || options === null) {
    diag.warn(
      'ctxflow/grpc: this grpc-js Server has no http2 server options to extend: reset guard unchanged',
    );
    return server;
  }
  if ((internals.http2Servers?.size ?? 0) > 0) {
    diag.warn('ctxflow/grpc: resetGuard() after bindAsync: ports bound already keep the default guard');
  }
  // Node applies the limit only when both are set.
  options.streamResetBurst = streamResetBurst;
  options.streamResetRate = streamResetRate;
  return server;
}

/**
 * `new grpc.Server(options)` with `resetGuard(server, limits)`: a server whose connections survive
 * the cancellations ctxflow clients send (about one reset per abandoned call).
 */
export function createServer(
  options: grpc.ServerOptions = {},
  limits: Partial<ResetGuard> = {},
): grpc.Server {
  return resetGuard(new grpc.Server(options), limits);
}
