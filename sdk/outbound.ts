import { context as otel, type TextMapGetter, type TextMapSetter } from '@opentelemetry/api';
import type { EncodeOptions } from './codec.ts';
import type { Context } from './context.ts';
import type { ContextDoneError } from './errors.ts';
import { type ForeignOutboundHeader, injectForeign } from './foreign.ts';
import { injectDeadline, injectTrace } from './propagation.ts';

/** How a client adapter writes a call's budget; every field has a default. */
export interface OutboundOptions extends EncodeOptions {
  /**
   * Deadline headers of other stacks to write too, with the same budget (`grpc-timeout`,
   * `connect-timeout-ms`), for a Connect or gRPC-gateway server downstream. Default none.
   */
  alsoSend?: readonly ForeignOutboundHeader[];
  /**
   * Write `ctx-timeout`. Default true; false on a transport that carries the relative budget
   * itself (gRPC's `grpc-timeout`, which a peer reads as the call's deadline): there it would
   * repeat it on every call. `ctx-deadline` is still written with `sendDeadline`.
   */
  sendTimeout?: boolean;
}

/** Writes outbound headers; with `get`, a shorter foreign timeout the caller set is kept. */
export type OutboundSetter<C> = TextMapSetter<C> & Partial<Pick<TextMapGetter<C>, 'get'>>;

const NO_HEADERS: Pick<TextMapGetter, 'get'> = { get: () => undefined };
const NO_OPTIONS: OutboundOptions = {};

/** Which headers `startOutbound` writes: both, the budget alone (an instrumentation writes the trace), or none. */
export type OutboundHeaders = 'all' | 'budget' | 'none';

/** One outbound call as `startOutbound` takes it. */
export interface OutboundCall<C> {
  /** The context the call is made under. */
  readonly ctx: Context;
  /** Where the headers go (headers, metadata) and how they are written. */
  readonly carrier: C;
  readonly setter: OutboundSetter<C>;
  /** Ends the call with the context's error, when the context ends before the call settles. */
  readonly abort: (error: ContextDoneError) => void;
  /** How the budget is written. */
  readonly options?: OutboundOptions;
  /** The call's own deadline when the transport has one earlier than the context's. Default `ctx.deadline`. */
  readonly deadline?: number;
  /** Which headers to write. Default `all`. */
  readonly headers?: OutboundHeaders;
}

/**
 * The outbound side of every client adapter, the counterpart of `acceptInbound`: throws the
 * context's error when it is done (nothing may be sent); writes the trace and the remaining budget
 * minus the reserve into the carrier; and calls `abort` with the context's error if the context
 * ends before the returned function is called, which the adapter does once the call has settled.
 */
export function startOutbound<C>(call: OutboundCall<C>): () => void {
  const { ctx, carrier, setter, options = NO_OPTIONS, headers = 'all' } = call;
  ctx.throwIfDone();
  const deadline = call.deadline ?? ctx.deadline;
  if (headers === 'all') injectTrace(otel.active(), carrier, setter);
  if (headers !== 'none') injectDeadline(carrier, setter, deadline, options);
  const alsoSend = options.alsoSend;
  if (alsoSend !== undefined && deadline !== undefined) {
    const getter = setter.get === undefined ? NO_HEADERS : (setter as Pick<TextMapGetter, 'get'>);
    injectForeign(carrier, getter, setter as TextMapSetter, alsoSend, deadline, options.reserveMs);
  }
  return ctx.onDone(call.abort);
}
