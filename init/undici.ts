import { type ChannelListener, subscribe, unsubscribe } from 'node:diagnostics_channel';
import { context as otel } from '@opentelemetry/api';
import {
  abortRequest,
  headerValue,
  madeByFetch,
  REQUEST_CREATED,
  type UndiciRequest,
} from '../adapters/http/undici.ts';
import { current } from '../sdk/index.ts';
import { isTracingSuppressed, type OutboundSetter, startOutbound, TIMEOUT_HEADER } from '../sdk/wire.ts';
import { type HttpClientOptions, written } from './http.ts';

const UNLINK = Symbol('ctxflow.init.undici');
const DONE = ['undici:request:trailers', 'undici:request:error'];
type Bound = UndiciRequest & { [UNLINK]?: () => void };

/** Appends a header unless it is there already (instrumentation-undici adds the global propagator's). */
const requestSetter: OutboundSetter<UndiciRequest> = {
  set: (carrier, key, value) => {
    if (headerValue(carrier, key) === undefined) carrier.addHeader(key, value);
  },
  get: headerValue,
};

/**
 * Makes every request of undici (and so of the global `fetch`) carry the trace and remaining budget
 * of `current()`, and aborts it with the context's error when the context ends first. Uses undici's
 * diagnostics channels, published in the caller's async context, so the global dispatcher is left alone.
 */
export function watchUndici(options: HttpClientOptions): () => void {
  const onCreate: ChannelListener = (message) => {
    const active = otel.active();
    // The SDK's own exports (run with tracing suppressed) belong to no request, whatever context
    // they inherit; a ctxflow fetch call binds its own requests.
    if (isTracingSuppressed(active) || madeByFetch(active)) return;
    const request = (message as { request: Bound }).request;
    try {
      request[UNLINK] = startOutbound({
        ctx: current(),
        carrier: request,
        setter: requestSetter,
        abort: (error) => abortRequest(request, error),
        options,
        headers: written(
          headerValue(request, TIMEOUT_HEADER) !== undefined,
          headerValue(request, 'traceparent') !== undefined,
        ),
      });
    } catch (error) {
      // The context has ended: undici fails the request with this error when it connects.
      request.error = error as Error;
    }
  };
  const onDone: ChannelListener = (message) => {
    const request = (message as { request: Bound }).request;
    const unlink = request[UNLINK];
    if (unlink === undefined) return;
    request[UNLINK] = undefined;
    unlink();
  };
  subscribe(REQUEST_CREATED, onCreate);
  for (const name of DONE) subscribe(name, onDone);
  return () => {
    unsubscribe(REQUEST_CREATED, onCreate);
    for (const name of DONE) unsubscribe(name, onDone);
  };
}
