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
import { context as otel } from '@opentelemetry/api';
import { type Cause, type Context, type ContextDoneError, current } from '../../sdk/index.ts';
import {
  DEFAULT_RESERVE_MS,
  type EncodeOptions,
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
    const plan = planCall(ctx, callOptions.deadline, reserveMs);
    if (plan.refused !== undefined) return refusedCall(plan.refused);
    const deadline = plan.deadline;
    const active = otel.active();
    const next = nextCall(plan.fromContext ? { ...callOptions, deadline } : callOptions);
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
          const outbound = { ctx, carrier: metadata, setter: metadataSetter, abort, options: wire, deadline };
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
    const plan = planCall(ctx, properties.callOptions.deadline, reserveMs);
    if (plan.refused !== undefined) {
      // Call interceptors replace the client's: this one alone runs, and the call never starts.
      const refused = plan.refused;
      properties.callOptions = {
        ...properties.callOptions,
        interceptors: [() => refusedCall(refused)],
        interceptor_providers: undefined,
      };
      return typedErrors(properties);
    }
    const deadline = plan.deadline;
    if (plan.fromContext) properties.callOptions = { ...properties.callOptions, deadline };
    const surface = properties.call as unknown as SurfaceCall;
    let endedBy: ContextDoneError | undefined;
    let unlink = startOutbound({
      ctx,
      carrier: properties.metadata,
      setter: metadataSetter,
      abort: (error) => {
        endedBy = error;
        surface.call?.cancelWithStatus(grpcStatusFor(error.cause.code), `ctxflow: ${error.message}`);
      },
      options: wire,
      deadline,
    });
    const typed = (error: unknown): unknown => {
      if (!(error instanceof Error) || typeof (error as { code?: unknown }).code !== 'number') return error;
      const status = clientStatus(error as unknown as StatusObject, endedBy, deadline);
      return toContextError(Object.assign(error, status)) ?? error;
    };
    const callback = properties.callback;
    if (callback !== undefined) {
      properties.callback = (error, value) => {
        unlink();
        unlink = noop;
        callback(error == null ? error : (typed(error) as ServiceError), value);
      };
    }
    const emit = surface.emit;
    surface.emit = function (this: unknown, event: string | symbol, ...args: unknown[]): boolean {
      if (event === 'status') {
        unlink();
        unlink = noop;
        args[0] = clientStatus(args[0] as StatusObject, endedBy, deadline);
      } else if (event === 'error') {
        args[0] = typed(args[0]);
      }
      return emit.call(this, event, ...args);
    };
    return properties;
  };
}

const DEADLINE_EXCEEDED: Cause = Object.freeze({ code: 'deadline_exceeded' });

/** The call's deadline already has the reserve taken off: it is sent as it is. */
function wireOptions(options: ClientInterceptorOptions): OutboundOptions {
  return { reserveMs: 0, sendDeadline: options.sendDeadline === true };
}

/** What a call under `ctx` does: refuse to start with a cause, or go with a deadline. */
type Plan =
  | { refused: Cause; deadline?: undefined; fromContext?: undefined }
  | { refused?: undefined; deadline: number | undefined; fromContext: boolean };

/**
 * A call's deadline: the context's minus the reserve, unless the call's own (`explicit`) is
 * earlier; a done context, or one with less than the reserve left, refuses the call.
 */
function planCall(ctx: Context, explicit: grpc.Deadline | undefined, reserveMs: number): Plan {
  const doneError = ctx.error;
  if (doneError !== undefined) return { refused: doneError.cause };
  const own = epochMs(explicit);
  const fromContextDeadline = ctx.deadline === undefined ? undefined : ctx.deadline - reserveMs;
  const fromContext = fromContextDeadline !== undefined && (own === undefined || fromContextDeadline < own);
  const deadline = fromContext ? fromContextDeadline : own;
  if (deadline !== undefined && deadline <= Date.now()) return { refused: DEADLINE_EXCEEDED };
  return { deadline, fromContext };
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
