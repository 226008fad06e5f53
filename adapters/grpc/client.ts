/** The client side: a grpc-js interceptor that sends each call under `current()`. */
import type {
  CallInvocationTransformer,
  Interceptor,
  InterceptorOptions,
  Listener,
  NextCall,
  ServiceError,
  StatusObject,
} from '@grpc/grpc-js';
import * as grpc from '@grpc/grpc-js';
import { type Context as OtelContext, context as otel, trace } from '@opentelemetry/api';
import { type Cause, type Context, type ContextDoneError, current } from '../../sdk/index.ts';
import {
  DEFAULT_RESERVE_MS,
  type EncodeOptions,
  type OutboundCall,
  type OutboundHeaders,
  type OutboundOptions,
  startOutbound,
} from '../../sdk/wire.ts';
import { toContextError, typedErrors } from './errors.ts';
import {
  epochMs,
  fallbackCode,
  grpcStatusFor,
  isContextStatus,
  metadataSetter,
  nearDeadline,
  noop,
  reasonOf,
  Status,
  withReason,
} from './metadata.ts';

/** Options of `clientInterceptor`: how the budget is written (grpc-timeout is the transport's own). */
export interface ClientInterceptorOptions extends EncodeOptions {}

/**
 * A grpc-js client interceptor. For each call, under `current()`:
 * - refuses to start when the context is done (the call fails at once with DEADLINE_EXCEEDED or
 *   CANCELLED, nothing is sent) or when less than `reserveMs` is left (DEADLINE_EXCEEDED);
 * - sets the call's deadline to the context's deadline minus `reserveMs` (an earlier `deadline`
 *   call option is kept), so grpc-timeout carries the remaining budget minus the reserve, and
 *   writes traceparent and ctx-timeout (ctx-deadline too with `sendDeadline`) into the metadata;
 * - cancels the call when the context ends (status DEADLINE_EXCEEDED or CANCELLED, with the
 *   context's cause in the status metadata as ctx-cancel-reason);
 * - adds the cause to DEADLINE_EXCEEDED and CANCELLED statuses (`status.cause`, hence `err.cause`),
 *   decoded from the server's ctx-cancel-reason when present.
 *
 * grpc-js builds the error it gives to the callback or stream itself; to get the typed
 * `DeadlineExceededError` / `CancelledError` there, construct the client with `clientOptions()`
 * (adds `typedErrors`), or convert with `toContextError(err)`.
 */
export function clientInterceptor(options: ClientInterceptorOptions = {}): Interceptor {
  const reserveMs = options.reserveMs ?? DEFAULT_RESERVE_MS;
  const wire = wireOptions(options);
  return (callOptions: InterceptorOptions, nextCall: NextCall) => {
    const ctx = current();
    const own = epochMs(callOptions.deadline);
    const deadline = callDeadline(ctx, own, reserveMs);
    const refused = refusal(ctx, deadline);
    if (refused !== undefined) return refusedCall(refused);
    const active = otel.active();
    const next = nextCall(deadline !== own ? { ...callOptions, deadline } : callOptions);
    let endedBy: ContextDoneError | undefined;
    let settled = false;
    let unlink = noop;
    const abort = (error: ContextDoneError): void => {
      endedBy = error;
      call.cancelWithStatus(grpcStatusFor(error.cause.code), `ctxflow: ${error.message}`);
    };
    const call: grpc.InterceptingCall = new grpc.InterceptingCall(next, {
      start(metadata, _listener, startNext) {
        try {
          const outbound = {
            ctx,
            carrier: metadata,
            setter: metadataSetter,
            abort,
            options: wire,
            deadline,
            headers: outboundHeaders(metadata, active),
          };
          unlink =
            otel.active() === active
              ? startOutbound(outbound)
              : otel.with(active, startOutbound, undefined, outbound);
        } catch (error) {
          // The context ended between the call's creation and its start.
          endedBy = error as ContextDoneError;
        }
        const listener: Listener = {
          onReceiveStatus(status, statusNext) {
            settled = true;
            unlink();
            unlink = noop;
            statusNext(clientStatus(status, endedBy, deadline));
          },
        };
        startNext(metadata, listener);
        if (endedBy !== undefined && !settled) abort(endedBy);
      },
    });
    return call;
  };
}

/** A grpc-js surface call (ClientUnaryCall, streams): its call once made, and its events. */
interface SurfaceCall {
  call?: { cancelWithStatus(code: grpc.status, details: string): void } | null;
  emit(event: string | symbol, ...args: unknown[]): boolean;
  [CALL_STATE]?: TransformedCall;
}

/**
 * What `clientInterceptor` does, as a grpc-js `callInvocationTransformer`, with no interceptor in
 * the call's path: grpc-js runs it once per call, in the caller's context, before it makes the
 * call. It sets the call's deadline and writes the metadata there, cancels the call through its
 * surface object (`call.call.cancelWithStatus`) when the context ends, and hands up the statuses
 * and typed errors `clientInterceptor` with `typedErrors` would. `clientOptions()` uses it.
 */
export function contextTransformer(options: ClientInterceptorOptions = {}): CallInvocationTransformer {
  const reserveMs = options.reserveMs ?? DEFAULT_RESERVE_MS;
  const wire = wireOptions(options);
  return (properties) => {
    const ctx = current();
    const own = epochMs(properties.callOptions.deadline);
    const deadline = callDeadline(ctx, own, reserveMs);
    const refused = refusal(ctx, deadline);
    if (refused !== undefined) {
      // Call interceptors replace the client's: this one alone runs, and the call never starts.
      properties.callOptions = {
        ...properties.callOptions,
        interceptors: [() => refusedCall(refused)],
        interceptor_providers: undefined,
      };
      return typedErrors(properties);
    }
    if (deadline !== own) properties.callOptions = { ...properties.callOptions, deadline };
    const surface = properties.call as unknown as SurfaceCall;
    const state = new TransformedCall(ctx, properties.metadata, wire, surface, deadline);
    state.unlink = startOutbound(state);
    const callback = properties.callback;
    if (callback !== undefined) {
      properties.callback = (error, value) => {
        state.release();
        callback(error == null ? error : (state.typed(error) as ServiceError), value);
      };
    }
    // A shared function and a field, not a closure per call: the surface's own emit is its prototype's.
    surface[CALL_STATE] = state;
    surface.emit = emitWithCause;
    return properties;
  };
}

const CALL_STATE = Symbol('ctxflow.grpc.client');

/**
 * A call made through `contextTransformer`: the outbound call `startOutbound` takes (one object per
 * call), and what its status and errors are settled against.
 */
class TransformedCall implements OutboundCall<grpc.Metadata> {
  readonly ctx: Context;
  readonly carrier: grpc.Metadata;
  readonly setter = metadataSetter;
  readonly options: OutboundOptions;
  readonly deadline: number | undefined;
  readonly headers: OutboundHeaders;
  readonly #surface: SurfaceCall;
  #endedBy: ContextDoneError | undefined = undefined;
  unlink: () => void = noop;

  constructor(
    ctx: Context,
    metadata: grpc.Metadata,
    options: OutboundOptions,
    surface: SurfaceCall,
    deadline: number | undefined,
  ) {
    this.ctx = ctx;
    this.carrier = metadata;
    this.options = options;
    this.#surface = surface;
    this.deadline = deadline;
    this.headers = outboundHeaders(metadata, otel.active());
  }

  /** The context ended before the call: it is cancelled with the context's status. */
  readonly abort = (error: ContextDoneError): void => {
    this.#endedBy = error;
    this.#surface.call?.cancelWithStatus(grpcStatusFor(error.cause.code), `ctxflow: ${error.message}`);
  };

  /** The call settled: the context no longer cancels it. */
  release(): void {
    this.unlink();
    this.unlink = noop;
  }

  status(status: StatusObject): StatusObject {
    return clientStatus(status, this.#endedBy, this.deadline);
  }

  /** A grpc-js error with its status settled, as a typed error for a context status. */
  typed(error: unknown): unknown {
    if (!(error instanceof Error) || typeof (error as { code?: unknown }).code !== 'number') return error;
    const status = this.status(error as unknown as StatusObject);
    return toContextError(Object.assign(error, status)) ?? error;
  }
}

/** The surface's `emit` for calls made through `contextTransformer`: the status and errors settled. */
function emitWithCause(this: SurfaceCall, event: string | symbol, ...args: unknown[]): boolean {
  const state = this[CALL_STATE] as TransformedCall;
  if (event === 'status') {
    state.release();
    args[0] = state.status(args[0] as StatusObject);
  } else if (event === 'error') {
    args[0] = state.typed(args[0]);
  }
  return (Object.getPrototypeOf(this) as SurfaceCall).emit.call(this, event, ...args);
}

const DEADLINE_EXCEEDED: Cause = Object.freeze({ code: 'deadline_exceeded' });

/**
 * The call's deadline already has the reserve taken off: it is sent as it is. grpc-timeout carries
 * it, so ctx-timeout is not written (a peer reads grpc-timeout as the call's deadline).
 */
function wireOptions(options: ClientInterceptorOptions): OutboundOptions {
  return { reserveMs: 0, sendDeadline: options.sendDeadline === true, sendTimeout: false };
}

/**
 * What a call writes into its metadata: the trace and, with `sendDeadline`, ctx-deadline (the
 * budget rides in grpc-timeout); the budget alone when the metadata carries the active span's
 * trace parent already. That is instrumentation-grpc's client span, injected with the global
 * propagator just before: a second injection would write the same values again on every call.
 * A traceparent left by an earlier call (metadata reused) names another span, and is replaced.
 */
function outboundHeaders(metadata: grpc.Metadata, active: OtelContext): OutboundHeaders {
  const spanId = trace.getSpanContext(active)?.spanId;
  if (spanId === undefined) return 'all';
  const sent = metadata.get(TRACEPARENT)[0];
  // version "-" trace id "-" span id: the span id starts at 36.
  return typeof sent === 'string' && sent.startsWith(spanId, SPAN_ID_AT) ? 'budget' : 'all';
}

const TRACEPARENT = 'traceparent';
const SPAN_ID_AT = 36;

/** A call's deadline: the context's minus the reserve, unless the call's own (`own`) is earlier. */
function callDeadline(ctx: Context, own: number | undefined, reserveMs: number): number | undefined {
  const fromContext = ctx.deadline === undefined ? undefined : ctx.deadline - reserveMs;
  return fromContext !== undefined && (own === undefined || fromContext < own) ? fromContext : own;
}

/** Why a call under `ctx` must not start: the context is done, or its deadline has passed. */
function refusal(ctx: Context, deadline: number | undefined): Cause | undefined {
  const doneError = ctx.error;
  if (doneError !== undefined) return doneError.cause;
  return deadline !== undefined && deadline <= Date.now() ? DEADLINE_EXCEEDED : undefined;
}

/**
 * The status handed up to grpc-js, with the cause attached (grpc-js copies it to the error as
 * `err.cause`): the local context's when it ended the call, else the peer's `ctx-cancel-reason`.
 * A CANCELLED with no reason within NEAR_DEADLINE_MS of the call's deadline is the peer's deadline
 * (counted from arrival, so due in the same millisecond or two: grpc-go resets the stream then),
 * reported as `deadline_exceeded` whichever side's timer fired first.
 */
function clientStatus(
  status: StatusObject,
  endedBy: ContextDoneError | undefined,
  deadline: number | undefined,
): StatusObject {
  if (!isContextStatus(status.code)) return status;
  if (endedBy !== undefined) {
    const cause = endedBy.cause;
    return {
      ...status,
      code: grpcStatusFor(cause.code),
      metadata: withReason(status.metadata, cause),
      cause,
    } as StatusObject;
  }
  const reason = reasonOf(status.metadata);
  if (reason === undefined && status.code === Status.CANCELLED && nearDeadline(deadline)) {
    return { ...status, code: Status.DEADLINE_EXCEEDED, cause: DEADLINE_EXCEEDED } as StatusObject;
  }
  return { ...status, cause: reason ?? { code: fallbackCode(status.code) } } as StatusObject;
}

type AnyInterceptingCall = ConstructorParameters<typeof grpc.InterceptingCall>[0];

/** A call that never reaches the channel: it reports `cause` as its status on the next tick. */
function refusedCall(cause: Cause): grpc.InterceptingCall {
  const metadata = withReason(undefined, cause);
  const code = grpcStatusFor(cause.code);
  const details = `ctxflow: call not started: ${cause.message ? `${cause.code}: ${cause.message}` : cause.code}`;
  let reported = false;
  const bottom: AnyInterceptingCall = {
    start(_metadata, listener) {
      process.nextTick(() => {
        if (reported) return;
        reported = true;
        listener?.onReceiveStatus?.({ code, details, metadata, cause } as StatusObject);
      });
    },
    cancelWithStatus: noop,
    getPeer: () => 'unknown',
    sendMessageWithContext: noop,
    sendMessage: noop,
    startRead: noop,
    halfClose: noop,
    getAuthContext: () => null,
  };
  return new grpc.InterceptingCall(bottom);
}

/**
 * Client options with ctxflow: `contextTransformer(options)`, which does what `clientInterceptor`
 * and `typedErrors` do without an interceptor per call. Spread them into the options of a generated
 * client: `new Client(address, credentials, { ...clientOptions(), ...yours })`; a
 * `callInvocationTransformer` of yours replaces it: then use `clientInterceptor()` and `typedErrors`.
 */
export function clientOptions(options: ClientInterceptorOptions = {}): {
  callInvocationTransformer: CallInvocationTransformer;
} {
  return { callInvocationTransformer: contextTransformer(options) };
}
