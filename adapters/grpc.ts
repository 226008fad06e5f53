/**
 * ctxflow for @grpc/grpc-js (>= 1.10.4): a client interceptor that sends the context's budget as
 * the call's deadline (grpc-timeout) and as ctx-* metadata and cancels the call with the context,
 * and a server interceptor that builds each call's context from grpc-timeout and ctx-* metadata,
 * runs the handler in it and ends it with the call.
 */

import type {
  CallInvocationTransformer,
  CallProperties,
  Deadline,
  Interceptor,
  InterceptorOptions,
  Listener,
  Metadata,
  NextCall,
  ServerInterceptingCallInterface,
  ServerInterceptor,
  ServerListener,
  ServerMethodDefinition,
  ServiceError,
  StatusObject,
} from '@grpc/grpc-js';
import * as grpc from '@grpc/grpc-js';
import { diag, context as otel, type TextMapGetter, type TextMapSetter } from '@opentelemetry/api';
import type { Cause, CauseCode } from '../sdk/cause.ts';
import { background, type CancelableContext, type Context, current, run } from '../sdk/context.ts';
import { ContextDoneError, errorFor } from '../sdk/errors.ts';
import { checkForeignHeaders } from '../sdk/foreign.ts';
import { acceptInbound, type InboundOptions } from '../sdk/inbound.ts';
import { injectContext } from '../sdk/propagation.ts';
import {
  CANCEL_REASON_HEADER,
  DEFAULT_RESERVE_MS,
  decodeCause,
  encodeCause,
  type WireOptions,
} from '../sdk/wire.ts';

export type { InboundOptions } from '../sdk/inbound.ts';

const Status = grpc.status;
const BACKGROUND = background();

/**
 * A typed context error that came back as a gRPC status: the `DeadlineExceededError` or
 * `CancelledError` for the cause, with the status fields of a grpc-js `ServiceError`.
 */
export type GrpcContextError = ContextDoneError & {
  /** The gRPC status code: DEADLINE_EXCEEDED (4) or CANCELLED (1). */
  code: grpc.status;
  details: string;
  /** The trailing metadata, with `ctx-cancel-reason`. */
  metadata: Metadata;
};

/** Options of `clientInterceptor`. */
export interface ClientInterceptorOptions extends Pick<WireOptions, 'reserveMs' | 'sendDeadline'> {}

/** Options of `serverInterceptor`: the context budget and how far inbound metadata is trusted. */
export interface ServerInterceptorOptions extends InboundOptions {}

// ---------------------------------------------------------------------------------------------
// Metadata helpers

const metadataSetter: TextMapSetter<Metadata> = {
  set(carrier, key, value) {
    carrier.set(key, value);
  },
};

/** Reads metadata as a propagator carrier: string values only, arrays when repeated. */
const metadataGetter: TextMapGetter<Metadata> = {
  get(carrier, key) {
    return headerValue(carrier.get(key));
  },
  keys(carrier) {
    return Object.keys(carrier.getMap());
  },
};

function headerValue(values: readonly unknown[]): string | string[] | undefined {
  if (values.length === 0) return undefined;
  if (values.length === 1) return typeof values[0] === 'string' ? values[0] : undefined;
  return values.filter((value): value is string => typeof value === 'string');
}

function reasonOf(metadata: Metadata | null | undefined): Cause | undefined {
  if (metadata == null || typeof metadata.get !== 'function') return undefined;
  const value = headerValue(metadata.get(CANCEL_REASON_HEADER));
  return value === undefined ? undefined : decodeCause(value);
}

function withReason(metadata: Metadata | null | undefined, cause: Cause): Metadata {
  const out =
    metadata == null || typeof metadata.clone !== 'function' ? new grpc.Metadata() : metadata.clone();
  out.set(CANCEL_REASON_HEADER, encodeCause(cause));
  return out;
}

/** The gRPC status that reports a context ended with `code`: DEADLINE_EXCEEDED for its deadline, CANCELLED otherwise. */
export function statusFor(code: CauseCode): grpc.status {
  return code === 'deadline_exceeded' ? Status.DEADLINE_EXCEEDED : Status.CANCELLED;
}

function fallbackCode(code: grpc.status): CauseCode {
  return code === Status.DEADLINE_EXCEEDED ? 'deadline_exceeded' : 'cancelled';
}

function isContextStatus(code: number): boolean {
  return code === Status.DEADLINE_EXCEEDED || code === Status.CANCELLED;
}

/** Epoch milliseconds of a grpc-js deadline; undefined for none (Infinity) or an invalid one. */
function epochMs(deadline: Deadline | undefined): number | undefined {
  if (deadline === undefined) return undefined;
  const ms = deadline instanceof Date ? deadline.getTime() : deadline;
  return Number.isFinite(ms) ? ms : undefined;
}

function noop(): void {}

// ---------------------------------------------------------------------------------------------
// Client

/** Trailing metadata of statuses produced because the local context ended → that context's error. */
const endedLocally = new WeakMap<Metadata, ContextDoneError>();

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
  const sendDeadline = options.sendDeadline === true;
  // The call's deadline already has the reserve taken off: it is sent as it is.
  const wire: WireOptions = { reserveMs: 0, sendDeadline };
  return (callOptions: InterceptorOptions, nextCall: NextCall) => {
    const ctx = current();
    const doneError = ctx.error;
    if (doneError !== undefined) return refusedCall(doneError.cause, doneError);
    const explicit = epochMs(callOptions.deadline);
    let deadline = ctx.deadline === undefined ? undefined : ctx.deadline - reserveMs;
    const fromContext = deadline !== undefined && (explicit === undefined || deadline < explicit);
    if (!fromContext) deadline = explicit;
    if (deadline !== undefined && deadline <= Date.now()) {
      return refusedCall({ code: 'deadline_exceeded' }, undefined);
    }
    const active = otel.active();
    const next = nextCall(fromContext ? { ...callOptions, deadline } : callOptions);
    let endedBy: ContextDoneError | undefined;
    let settled = false;
    let unlink = noop;
    const call: grpc.InterceptingCall = new grpc.InterceptingCall(next, {
      start(metadata, _listener, startNext) {
        if (otel.active() === active) injectContext(ctx, metadata, metadataSetter, wire, deadline);
        else otel.with(active, injectContext, undefined, ctx, metadata, metadataSetter, wire, deadline);
        const listener: Listener = {
          onReceiveStatus(status, statusNext) {
            settled = true;
            unlink();
            unlink = noop;
            statusNext(clientStatus(status, endedBy, deadline));
          },
        };
        startNext(metadata, listener);
        if (ctx !== BACKGROUND && !settled) {
          unlink = ctx.onDone((error) => {
            endedBy = error;
            call.cancelWithStatus(statusFor(error.cause.code), `ctxflow: ${error.message}`);
          });
        }
      },
    });
    return call;
  };
}

/**
 * The status handed up to grpc-js: with the cause attached, and the local one when our context ended
 * the call. A CANCELLED with no reason within NEAR_DEADLINE_MS of the call's deadline is the peer's
 * deadline (counted from arrival, so due in the same millisecond or two: grpc-go resets the stream
 * then), reported as `deadline_exceeded` whichever side's timer fired first.
 */
function clientStatus(
  status: StatusObject,
  endedBy: ContextDoneError | undefined,
  deadline: number | undefined,
): StatusObject {
  if (!isContextStatus(status.code)) return status;
  if (endedBy !== undefined) {
    const metadata = withReason(status.metadata, endedBy.cause);
    endedLocally.set(metadata, endedBy);
    return { ...status, code: statusFor(endedBy.cause.code), metadata, cause: endedBy.cause } as StatusObject;
  }
  const reason = reasonOf(status.metadata);
  if (reason === undefined && status.code === Status.CANCELLED && nearDeadline(deadline)) {
    return {
      ...status,
      code: Status.DEADLINE_EXCEEDED,
      cause: { code: 'deadline_exceeded' },
    } as StatusObject;
  }
  return { ...status, cause: reason ?? { code: fallbackCode(status.code) } } as StatusObject;
}

/** Within this many ms of its deadline, a call cancelled with no reason is counted as past its deadline. */
const NEAR_DEADLINE_MS = 5;

function nearDeadline(deadline: number | undefined): boolean {
  return deadline !== undefined && Date.now() >= deadline - NEAR_DEADLINE_MS;
}

type AnyInterceptingCall = ConstructorParameters<typeof grpc.InterceptingCall>[0];

/** A call that never reaches the channel: it reports `cause` as its status on the next tick. */
function refusedCall(cause: Cause, localError: ContextDoneError | undefined): grpc.InterceptingCall {
  const metadata = withReason(undefined, cause);
  if (localError !== undefined) endedLocally.set(metadata, localError);
  const code = statusFor(cause.code);
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

function isServiceError(error: unknown): error is ServiceError {
  return error instanceof Error && typeof (error as Partial<ServiceError>).code === 'number';
}

/**
 * The typed error for a grpc-js client error, or undefined when it is not about a context:
 * the local context's own error when it ended the call (`err === ctx.error`), otherwise, for
 * DEADLINE_EXCEEDED and CANCELLED, a `DeadlineExceededError` / `CancelledError` with the cause
 * the server sent in ctx-cancel-reason (`deadline_exceeded` / `cancelled` when it sent none) and
 * the status as `code`, `details`, `metadata`. A `ContextDoneError` is returned as is.
 */
export function toContextError(error: unknown): ContextDoneError | undefined {
  if (error instanceof ContextDoneError) return error;
  if (!isServiceError(error)) return undefined;
  const local = error.metadata === undefined ? undefined : endedLocally.get(error.metadata);
  if (local !== undefined) return local;
  if (!isContextStatus(error.code)) return undefined;
  const attached = (error as { cause?: unknown }).cause;
  const cause = isCause(attached)
    ? attached
    : (reasonOf(error.metadata) ?? { code: fallbackCode(error.code) });
  const typed = errorFor(cause) as GrpcContextError;
  typed.code = error.code;
  typed.details = error.details;
  typed.metadata = error.metadata;
  if (error.stack !== undefined) typed.stack = `${typed.name}: ${typed.message}\n${stackFrames(error.stack)}`;
  return typed;
}

function stackFrames(stack: string): string {
  const start = stack.indexOf('\n    at ');
  return start === -1 ? '' : stack.slice(start + 1);
}

function isCause(value: unknown): value is Cause {
  return typeof value === 'object' && value !== null && typeof (value as Cause).code === 'string';
}

/**
 * A grpc-js `callInvocationTransformer` that gives the callback (unary, client streaming) and the
 * 'error' event (server streaming, bidi) the typed error of `toContextError` instead of the
 * plain `ServiceError` when a call ends for a context's sake.
 */
export const typedErrors: CallInvocationTransformer = (properties) => {
  const callback = properties.callback;
  if (callback !== undefined) {
    properties.callback = (error, value) => {
      if (error == null) callback(error, value);
      else callback((toContextError(error) as ServiceError | undefined) ?? error, value);
    };
  } else {
    const call = properties.call as CallProperties<unknown, unknown>['call'] & { emit: Emit };
    const emit = call.emit;
    call.emit = function (this: unknown, event: string | symbol, ...args: unknown[]): boolean {
      if (event === 'error') args[0] = toContextError(args[0]) ?? args[0];
      return emit.call(this, event, ...args);
    };
  }
  return properties;
};
type Emit = (event: string | symbol, ...args: unknown[]) => boolean;

/**
 * Client options with ctxflow: `clientInterceptor(options)` and `typedErrors`. Spread them into the
 * options of a generated client: `new Client(address, credentials, { ...clientOptions(), ...yours })`.
 */
export function clientOptions(options: ClientInterceptorOptions = {}): {
  interceptors: Interceptor[];
  callInvocationTransformer: CallInvocationTransformer;
} {
  return { interceptors: [clientInterceptor(options)], callInvocationTransformer: typedErrors };
}

// ---------------------------------------------------------------------------------------------
// Server

interface ServerCall {
  readonly ctx: CancelableContext;
  readonly otelContext: ReturnType<typeof otel.active>;
  /** A status was sent (or the call is gone): nothing more goes out. */
  finished: boolean;
  /** A unary response message went out: its OK status follows and is kept. */
  responded: boolean;
  /** The handler was bound by `wrapService`. */
  bound: boolean;
  unlink: () => void;
}

/**
 * A live call's state, on its request metadata (the handler's `call.metadata`), for `wrapService`.
 * A symbol property rather than a WeakMap: one per call, and ephemerons cost the GC at this rate.
 */
const CALL_STATE = Symbol('ctxflow.grpc.call');
type WithState = Metadata & { [CALL_STATE]?: ServerCall };

function stateOf(metadata: Metadata | undefined): ServerCall | undefined {
  return metadata === undefined || metadata === null ? undefined : (metadata as WithState)[CALL_STATE];
}

let warnedUnbound = false;

/** instrumentation-grpc (and anything else that wraps Server#register with shimmer) replaces the handler's context. */
function registerIsWrapped(): boolean {
  return (grpc.Server.prototype.register as { __wrapped?: boolean }).__wrapped === true;
}

function checkBound(state: ServerCall): void {
  if (state.bound || warnedUnbound || !registerIsWrapped()) return;
  warnedUnbound = true;
  diag.warn(
    'ctxflow/grpc: grpc.Server#register is wrapped (instrumentation-grpc?): handlers run in a context ' +
      'it chose and current() does not see the call context; register services with wrapService(impl).',
  );
}

/**
 * A grpc-js server interceptor (`new grpc.Server({ interceptors: [serverInterceptor()] })`). For each
 * call it builds a context with `acceptInbound` from the metadata (trace, ctx-timeout, ctx-deadline)
 * and the call's deadline (grpc-timeout), bounded by `budgetMs`, and:
 * - sheds the call with DEADLINE_EXCEEDED, without running the handler, when that context is
 *   already past its deadline;
 * - runs the handler, its message events and their continuations in it (`current()`; with
 *   instrumentation-grpc or another wrapper of Server#register, add `wrapService`);
 * - cancels it with `upstream_cancelled` when the client cancels (`client_disconnected` when
 *   `trustInbound` is false), with `deadline_exceeded` when the deadline passes;
 * - when the context ends before the handler answers, ends the call with DEADLINE_EXCEEDED or
 *   CANCELLED and ctx-cancel-reason in the trailing metadata; a late answer is dropped;
 * - cancels it with `error` when the handler fails (any status but OK), and releases it when
 *   the status is sent.
 */
export function serverInterceptor(options: ServerInterceptorOptions = {}): ServerInterceptor {
  checkForeignHeaders(options.foreignHeaders);
  const callerGone: CauseCode = options.trustInbound === false ? 'client_disconnected' : 'upstream_cancelled';
  return (method: ServerMethodDefinition<unknown, unknown>, call: ServerInterceptingCallInterface) => {
    let state: ServerCall | undefined;
    const handlerOnMetadata = method.requestStream;
    const unaryResponse = !method.responseStream;

    const finish = (live: ServerCall): void => {
      live.finished = true;
      live.unlink();
      live.unlink = noop;
    };

    const intercepting: grpc.ServerInterceptingCall = new grpc.ServerInterceptingCall(call, {
      start(startNext) {
        const listener: ServerListener = {
          onReceiveMetadata(metadata, metadataNext) {
            const transportDeadline = epochMs(call.getDeadline());
            const inbound = acceptInbound(metadata, metadataGetter, options, transportDeadline);
            const ctx = inbound.ctx;
            const callState: ServerCall = {
              ctx,
              otelContext: inbound.otelContext,
              finished: false,
              responded: false,
              bound: false,
              unlink: noop,
            };
            state = callState;
            if (ctx.done) {
              // Shed: the budget is spent before the handler would start.
              intercepting.sendStatus({
                code: statusFor((ctx.cause as Cause).code),
                details: `ctxflow: ${ctx.error?.message}`,
              });
              return;
            }
            (metadata as WithState)[CALL_STATE] = callState;
            // A deadline of ours ends the call with its reason. When it is the transport's own
            // (give or take the clock's tick), grpc-js's deadline timer ends the call already and
            // onCancel ends the context: no timer of ours until the handler observes the context.
            const deadline = ctx.deadline;
            if (
              deadline !== undefined &&
              (transportDeadline === undefined || deadline < transportDeadline - NEAR_DEADLINE_MS)
            ) {
              callState.unlink = ctx.onDone((error) => {
                if (callState.finished || callState.responded) return;
                intercepting.sendStatus({
                  code: statusFor(error.cause.code),
                  details: `ctxflow: ${error.message}`,
                });
              });
            }
            // The handler starts here for client and bidi streaming, at the half-close otherwise:
            // events before it run no user code and need no context.
            if (!handlerOnMetadata) {
              metadataNext(metadata);
              return;
            }
            otel.with(inbound.otelContext, metadataNext, undefined, metadata);
            checkBound(callState);
          },
          onReceiveMessage(message, messageNext) {
            if (state === undefined || !handlerOnMetadata) messageNext(message);
            else otel.with(state.otelContext, messageNext, undefined, message);
          },
          onReceiveHalfClose(halfCloseNext) {
            if (state === undefined) {
              halfCloseNext();
              return;
            }
            otel.with(state.otelContext, halfCloseNext);
            if (!handlerOnMetadata) checkBound(state);
          },
          onCancel() {
            const live = state;
            if (live === undefined || live.finished) return;
            finish(live);
            live.ctx.cancel(nearDeadline(live.ctx.deadline) ? 'deadline_exceeded' : callerGone);
            live.ctx.release();
          },
        };
        startNext(listener);
      },
      sendMetadata(metadata, metadataNext) {
        if (state?.finished !== true) metadataNext(metadata);
      },
      sendMessage(message, messageNext) {
        if (state === undefined) {
          messageNext(message);
          return;
        }
        if (state.finished) return;
        const error = state.ctx.error;
        if (error !== undefined) {
          // The context ended before this answer: it is not sent, the call ends with the cause.
          // Straight to the next call: ours holds statuses back while a message is in progress.
          finish(state);
          call.sendStatus({
            code: statusFor(error.cause.code),
            details: `ctxflow: ${error.message}`,
            metadata: withReason(undefined, error.cause),
          });
          return;
        }
        if (unaryResponse) state.responded = true;
        messageNext(message);
      },
      sendStatus(status, statusNext) {
        const live = state;
        if (live === undefined) {
          statusNext(status);
          return;
        }
        if (live.finished) return;
        finish(live);
        const ctx = live.ctx;
        const cause = ctx.cause;
        let out = status;
        if (cause !== undefined && !(live.responded && status.code === Status.OK)) {
          const code = statusFor(cause.code);
          out = {
            code,
            details:
              status.code === code && status.details ? status.details : `ctxflow: ${ctx.error?.message}`,
            metadata: withReason(status.metadata, cause),
          };
        } else if (cause === undefined && status.code !== Status.OK) {
          if (isContextStatus(status.code)) {
            // The handler answered with a context status (a downstream call's, usually): keep its cause.
            const reported = reasonOf(status.metadata) ?? { code: fallbackCode(status.code) };
            ctx.cancel(reported);
            out = { ...status, metadata: withReason(status.metadata, reported) };
          } else {
            ctx.cancel({ code: 'error', message: Status[status.code] ?? String(status.code) });
          }
        }
        statusNext(out);
        ctx.release();
      },
    });
    return intercepting;
  };
}

/** The context of the call a handler serves, from its call object; undefined without `serverInterceptor`. */
export function callContext(call: { metadata?: Metadata }): Context | undefined {
  return stateOf(call.metadata)?.ctx;
}

type Handler = (this: unknown, call: HandlerCall, callback?: UnaryCallback) => unknown;
type UnaryCallback = (error: unknown, value?: unknown, trailer?: Metadata, flags?: number) => void;
interface HandlerCall {
  metadata: Metadata;
  emit(event: string | symbol, ...args: unknown[]): boolean;
  writableEnded?: boolean;
  destroyed?: boolean;
}

/**
 * Binds the handlers of a service implementation to their call's context, for use with
 * `serverInterceptor()`: `server.addService(definition, wrapService(impl))`. Needed when something
 * else wraps the handlers and chooses their context (instrumentation-grpc runs each handler in a
 * context extracted from the metadata alone), and useful anyway:
 * - a handler that throws, or returns a promise that rejects, fails the call with UNKNOWN (with
 *   the gRPC status when the error has a numeric `code`) instead of crashing the process;
 * - a `ContextDoneError` (thrown, rejected, passed to the callback or emitted) becomes the status
 *   for its cause (DEADLINE_EXCEEDED or CANCELLED) with ctx-cancel-reason;
 * - a unary or client-streaming handler may return (a promise of) the response instead of calling
 *   the callback.
 */
export function wrapService<T extends object>(implementation: T): T {
  const out: Record<string, unknown> = {};
  for (let source: object | null = implementation; source !== null && source !== Object.prototype; ) {
    for (const key of Object.getOwnPropertyNames(source)) {
      if (key === 'constructor' || key in out) continue;
      const value = (implementation as Record<string, unknown>)[key];
      out[key] = typeof value === 'function' ? bindHandler(value as Handler, implementation) : value;
    }
    source = Object.getPrototypeOf(source);
  }
  return out as T;
}

function bindHandler(handler: Handler, self: unknown): Handler {
  return function ctxflowHandler(call: HandlerCall, callback?: UnaryCallback): void {
    const state = stateOf(call?.metadata);
    if (state === undefined) {
      handleCall(handler, self, call, callback);
      return;
    }
    state.bound = true;
    run(state.ctx, () => handleCall(handler, self, call, callback));
  };
}

function handleCall(
  handler: Handler,
  self: unknown,
  call: HandlerCall,
  callback: UnaryCallback | undefined,
): void {
  let answered = false;
  const respond: UnaryCallback | undefined =
    callback === undefined
      ? undefined
      : (error, value, trailer, flags) => {
          if (answered) return;
          answered = true;
          callback(error == null ? error : handlerError(error, false), value, trailer, flags);
        };
  if (callback === undefined) {
    const emit = call.emit;
    call.emit = function (this: unknown, event: string | symbol, ...args: unknown[]): boolean {
      if (event === 'error') args[0] = handlerError(args[0], false);
      return emit.call(this, event, ...args);
    };
  }
  const fail = (error: unknown): void => {
    const status = handlerError(error, true);
    if (respond !== undefined) respond(status);
    else if (!call.writableEnded && !call.destroyed) call.emit('error', status);
  };
  let result: unknown;
  try {
    result = handler.call(self, call, respond);
  } catch (error) {
    fail(error);
    return;
  }
  if (isThenable(result)) {
    result.then(
      (value) => {
        if (respond !== undefined && value !== undefined) respond(null, value);
      },
      (error) => fail(error),
    );
  } else if (respond !== undefined && result !== undefined) {
    respond(null, result);
  }
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return (
    (typeof value === 'object' || typeof value === 'function') &&
    value !== null &&
    typeof (value as PromiseLike<unknown>).then === 'function'
  );
}

/**
 * What a handler's error becomes: a context error → its status and reason; an error with a
 * numeric gRPC `code` → itself; anything else thrown or rejected → UNKNOWN, as grpc-js does for
 * a handler that throws (the message only with GRPC_NODE_DEBUG_SEND_ERROR_DETAILS).
 */
function handlerError(error: unknown, thrown: boolean): unknown {
  if (error instanceof ContextDoneError) {
    const code = (error as Partial<GrpcContextError>).code;
    const status = typeof code === 'number' && isContextStatus(code) ? code : statusFor(error.cause.code);
    return {
      code: status,
      details: `ctxflow: ${error.message}`,
      metadata: withReason(undefined, error.cause),
    };
  }
  if (!thrown) return error;
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code === 'number' && Number.isInteger(code)) return error;
  const details = process.env.GRPC_NODE_DEBUG_SEND_ERROR_DETAILS
    ? `Server method handler threw error ${(error as Error | null)?.message ?? String(error)}`
    : 'Unknown error';
  return { code: Status.UNKNOWN, details };
}
