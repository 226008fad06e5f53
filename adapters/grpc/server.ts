/** The server side: a grpc-js interceptor that gives each call its context. */
import type {
  Metadata,
  ServerInterceptingCallInterface,
  ServerInterceptor,
  ServerListener,
  ServerMethodDefinition,
  StatusObject,
} from '@grpc/grpc-js';
import * as grpc from '@grpc/grpc-js';
import { type Attributes, diag, context as otel } from '@opentelemetry/api';
import type { CancelableContext, Cause, CauseCode, Context, ContextDoneError } from '../../sdk/index.ts';
import {
  acceptInbound,
  checkForeignHeaders,
  countEnded,
  countShed,
  hopAttributes,
  type InboundCall,
  type InboundOptions,
  narrowInbound,
  recordArrival,
} from '../../sdk/wire.ts';
import {
  contextStatus,
  epochMs,
  fallbackCode,
  grpcStatusFor,
  isContextStatus,
  metadataGetter,
  NEAR_DEADLINE_MS,
  nearDeadline,
  noop,
  reasonOf,
  Status,
  withReason,
} from './metadata.ts';

/** Options of `serverInterceptor`: the context budget and how far inbound metadata is trusted. */
export interface ServerInterceptorOptions extends InboundOptions {}

export interface ServerCall {
  readonly ctx: CancelableContext;
  readonly otelContext: ReturnType<typeof otel.active>;
  /** The budget on arrival (`acceptInbound`), for the server span. */
  readonly budgetMs: number | undefined;
  /** The metric attributes of the call: transport and method. */
  readonly attributes: Attributes;
  /** A status was sent (or the call is gone): nothing more goes out. */
  finished: boolean;
  /** A unary response message went out: its OK status follows and is kept. */
  responded: boolean;
  /** The handler was bound by `wrapService`. */
  bound: boolean;
  /** The context an inner layer narrowed `ctx` to (`narrowCall`), which the handler runs in. */
  narrowed: Context | undefined;
  unlink: () => void;
  /** Stops recording the context's end on the handler's span, before a normal end. */
  untrace: () => void;
  /** Ends the call with `status` (settled against the context on its way out). */
  end(status: StatusLike): void;
}

/**
 * A live call's state, on its request metadata (the handler's `call.metadata`), for `wrapService`.
 * A symbol property rather than a WeakMap: one per call, and ephemerons cost the GC at this rate.
 */
const CALL_STATE = Symbol('ctxflow.grpc.call');
type WithState = Metadata & { [CALL_STATE]?: ServerCall };

export function stateOf(metadata: Metadata | undefined): ServerCall | undefined {
  return metadata === undefined || metadata === null ? undefined : (metadata as WithState)[CALL_STATE];
}

/**
 * Builds an inbound call's context from its metadata and its grpc-timeout, and records its budget
 * on arrival: the start shared by `serverInterceptor` and `wrapService`.
 */
export function acceptCall(
  metadata: Metadata,
  options: InboundOptions,
  transportDeadline: number | undefined,
  attributes: Attributes,
): InboundCall {
  const inbound = acceptInbound(metadata, metadataGetter, options, transportDeadline);
  recordArrival(attributes, inbound.budgetMs);
  return inbound;
}

/**
 * True when the context's deadline is its own, earlier than the transport's (grpc-timeout) beyond
 * the clock's tick: only then must ctxflow end the call, since grpc-js's timer ends it otherwise.
 */
export function endsBeforeTransport(ctx: Context, transportDeadline: number | undefined): boolean {
  const deadline = ctx.deadline;
  return (
    deadline !== undefined &&
    (transportDeadline === undefined || deadline < transportDeadline - NEAR_DEADLINE_MS)
  );
}

/** The status that sheds a call whose budget is spent before its handler would start (counted), or undefined. */
export function shedStatus(ctx: Context, attributes: Attributes): StatusObject | undefined {
  if (ctx.cause === undefined) return undefined;
  countShed(attributes);
  return contextStatus(ctx.error as ContextDoneError);
}

/**
 * The context a handler bound by `wrapService` runs in when a layer before it (serverInterceptor,
 * or init()'s own wrapService) built the call's context: that context, or a child narrowed to
 * `budgetMs` when that is tighter, whose end ends the call with its cause, once.
 */
export function narrowCall(state: ServerCall, budgetMs: number | undefined): Context {
  const ctx = narrowInbound(state.ctx, budgetMs);
  if (ctx === state.ctx) return ctx;
  state.narrowed = ctx;
  ctx.onDone((error) => {
    if (!state.finished && !state.responded) state.end(contextStatus(error));
  });
  return ctx;
}

/** Puts a live call's state on its request metadata, where `stateOf` and `contextOf` find it. */
export function attachState(metadata: Metadata, state: ServerCall): void {
  (metadata as WithState)[CALL_STATE] = state;
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
            const attributes = hopAttributes('grpc', method.path);
            const transportDeadline = epochMs(call.getDeadline());
            const inbound = acceptCall(metadata, options, transportDeadline, attributes);
            const ctx = inbound.ctx;
            const callState = new InterceptedCall(inbound, attributes, intercepting);
            state = callState;
            const shed = shedStatus(ctx, attributes);
            if (shed !== undefined) {
              finish(callState);
              call.sendStatus(shed);
              return;
            }
            attachState(metadata, callState);
            // A deadline of ours ends the call with its reason. When it is the transport's own
            // (give or take the clock's tick), grpc-js's deadline timer ends the call already and
            // onCancel ends the context: no timer of ours until the handler observes the context.
            if (endsBeforeTransport(ctx, transportDeadline)) {
              callState.unlink = ctx.onDone((error) => {
                if (callState.finished || callState.responded) return;
                intercepting.sendStatus(contextStatus(error));
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
            countEnded(live.attributes, (live.ctx.cause as Cause).code);
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
          countEnded(state.attributes, error.cause.code);
          call.sendStatus(contextStatus(error));
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
        // A unary response went out while the context was live: its OK stands.
        const out =
          live.responded && status.code === Status.OK
            ? status
            : ((settleStatus(live, status.code === Status.OK ? undefined : status) as
                | StatusObject
                | undefined) ?? status);
        statusNext(out);
        live.untrace();
        live.ctx.cancel();
      },
    });
    return intercepting;
  };
}

/** A call whose context serverInterceptor built. */
class InterceptedCall implements ServerCall {
  readonly ctx: ServerCall['ctx'];
  readonly otelContext: ServerCall['otelContext'];
  readonly budgetMs: number | undefined;
  readonly attributes: Attributes;
  finished = false;
  responded = false;
  bound = false;
  narrowed: Context | undefined = undefined;
  unlink: () => void = noop;
  untrace: () => void = noop;
  readonly #call: grpc.ServerInterceptingCall;

  constructor(inbound: InboundCall, attributes: Attributes, call: grpc.ServerInterceptingCall) {
    this.ctx = inbound.ctx;
    this.otelContext = inbound.otelContext;
    this.budgetMs = inbound.budgetMs;
    this.attributes = attributes;
    this.#call = call;
  }

  end(status: StatusLike): void {
    this.#call.sendStatus(status as StatusObject);
  }
}

/** A status as handlers and grpc-js pass it: a `StatusObject`, or a `ServiceError`-like object. */
export interface StatusLike {
  code?: unknown;
  details?: unknown;
  message?: unknown;
  metadata?: Metadata | null;
}

/**
 * The status that ends a call whose handler answered `status` (undefined for a response or a
 * normal end), decided against the call's context, and the end counted: a context that ended
 * first sends its own status with its reason; a context status from the handler (a downstream
 * call's) ends the context with its cause; any other failure ends it with `error`. Undefined:
 * the handler's answer goes as it is.
 */
export function settleStatus(live: ServerCall, status: StatusLike | undefined): StatusLike | undefined {
  const ctx = live.ctx;
  const cause = ctx.cause;
  if (cause !== undefined) {
    countEnded(live.attributes, cause.code);
    const code = grpcStatusFor(cause.code);
    return {
      code,
      details: status?.code === code && status.details ? status.details : `ctxflow: ${ctx.error?.message}`,
      metadata: withReason(status?.metadata, cause),
    };
  }
  if (status === undefined) return undefined;
  const code = typeof status.code === 'number' ? status.code : Status.UNKNOWN;
  if (code === Status.OK) return status;
  if (isContextStatus(code)) {
    // The handler answered with a context status (a downstream call's, usually): keep its cause.
    const reported = reasonOf(status.metadata) ?? { code: fallbackCode(code) };
    ctx.cancel(reported);
    countEnded(live.attributes, reported.code, 'downstream');
    return {
      code,
      details: status.details ?? status.message,
      metadata: withReason(status.metadata, reported),
    };
  }
  ctx.cancel({ code: 'error', message: Status[code] ?? String(code) });
  countEnded(live.attributes, 'error');
  return status;
}

/** The context of the call a handler serves, from its call object; undefined when ctxflow serves no context for it. */
export function contextOf(call: { metadata?: Metadata }): Context | undefined {
  const state = stateOf(call.metadata);
  return state === undefined ? undefined : (state.narrowed ?? state.ctx);
}
