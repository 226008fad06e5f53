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
import { diag, context as otel } from '@opentelemetry/api';
import type { Context } from '../../sdk/index.ts';
import {
  acceptInbound,
  checkForeignHeaders,
  DEFAULT_RESERVE_MS,
  FOREIGN_HEADERS,
  GRPC_TIMEOUT_HEADER,
  type InboundCall,
  type InboundOptions,
  type Transport,
} from '../../sdk/wire.ts';
import {
  contextStatus,
  epochMs,
  fallbackCode,
  grpcStatusFor,
  isContextStatus,
  metadataGetter,
  NEAR_DEADLINE_MS,
  noop,
  reasonOf,
  Status,
  withReason,
} from './metadata.ts';

/** Options of `serverInterceptor` and `wrapService`: the context budget and how far inbound metadata is trusted. */
export interface ServerInterceptorOptions extends InboundOptions {
  /**
   * A call arriving with less than this many milliseconds left is answered DEADLINE_EXCEEDED at
   * once, without running its handler: the shedding rule of every transport. Default 5 (the
   * default reserve: less than that could not give a downstream call any budget).
   */
  minBudgetMs?: number;
}

/** The transport as ctxflow's metrics name it. */
export const GRPC: Transport = { name: 'grpc', operationKey: 'rpc.method', callersAreServices: true };

/** A served call: its lifecycle in the core, and what the gRPC side of it needs beside. */
export interface ServerCall {
  readonly inbound: InboundCall;
  /** A status was sent (or the call is gone): nothing more goes out. */
  finished: boolean;
  /** A unary response message went out: its OK status follows and is kept. */
  responded: boolean;
  /** The handler was bound by `wrapService`. */
  bound: boolean;
  /** The call was answered for its context's end: what the handler answers after that is late. */
  endedByContext: boolean;
  unlink: () => void;
  /** Ends the call for its context's end with `status` (settled against the context on its way out). */
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
 * The options a server side accepts calls with, resolved once: grpc-js takes grpc-timeout out of
 * the metadata (it is the call's deadline, `transportDeadline`), so it is not looked up there.
 */
export function serverOptions<O extends ServerInterceptorOptions>(options: O): O {
  const foreignHeaders = (options.foreignHeaders ?? FOREIGN_HEADERS).filter(
    (header) => header !== GRPC_TIMEOUT_HEADER,
  );
  return { ...options, foreignHeaders };
}

/** Builds an inbound call's context from its metadata and its grpc-timeout: the start shared by `serverInterceptor` and `wrapService`. */
export function acceptCall(
  metadata: Metadata,
  options: ServerInterceptorOptions,
  transportDeadline: number | undefined,
  path: string,
): InboundCall {
  return acceptInbound(metadata, metadataGetter, options, transportDeadline, GRPC, path);
}

/** The status that sheds a call which arrived with less than `minBudgetMs` left (counted), or undefined. */
export function shedStatus(
  inbound: InboundCall,
  options: ServerInterceptorOptions,
): StatusObject | undefined {
  const error = inbound.shed(options.minBudgetMs ?? DEFAULT_RESERVE_MS);
  return error === undefined ? undefined : contextStatus(error);
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

/**
 * The context a handler bound by `wrapService` runs in when a layer before it (serverInterceptor,
 * or init()'s own wrapService) built the call's context: that context, or a child narrowed to
 * `budgetMs` when that is tighter, whose end ends the call with its cause, once.
 */
export function narrowCall(state: ServerCall, budgetMs: number | undefined): Context {
  const before = state.inbound.scope;
  const ctx = state.inbound.narrow(budgetMs);
  if (ctx === before) return ctx;
  ctx.onDone((error) => {
    if (!state.finished && !state.responded) state.end(contextStatus(error));
  });
  return ctx;
}

/** The call is over: a status went out (or the call is gone), nothing more will. */
export function finishCall(state: ServerCall): void {
  state.finished = true;
  state.unlink();
  state.unlink = noop;
}

/** The client cancelled the call, or grpc-js's deadline timer ended it: the context ends, counted. */
export function cancelledCall(state: ServerCall): void {
  if (state.finished) return;
  finishCall(state);
  state.inbound.callerGone();
  state.inbound.finish(false);
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
 * - sheds the call with DEADLINE_EXCEEDED, without running the handler, when it arrived with less
 *   than `minBudgetMs` left;
 * - runs the handler, its message events and their continuations in it (`current()`; with
 *   instrumentation-grpc or another wrapper of Server#register, add `wrapService`);
 * - cancels it with `upstream_cancelled` when the client cancels (`client_disconnected` when
 *   `trustInbound` is false), with `deadline_exceeded` when the deadline passes;
 * - when the context ends before the handler answers, ends the call with DEADLINE_EXCEEDED or
 *   CANCELLED and ctx-cancel-reason in the trailing metadata; a late answer is dropped;
 * - cancels it with `error` when the handler fails (any status but OK), and releases it when
 *   the status is sent.
 */
export function serverInterceptor(interceptorOptions: ServerInterceptorOptions = {}): ServerInterceptor {
  checkForeignHeaders(interceptorOptions.foreignHeaders);
  const options = serverOptions(interceptorOptions);
  return (method: ServerMethodDefinition<unknown, unknown>, call: ServerInterceptingCallInterface) => {
    let state: ServerCall | undefined;
    const handlerOnMetadata = method.requestStream;
    const unaryResponse = !method.responseStream;

    const intercepting: grpc.ServerInterceptingCall = new grpc.ServerInterceptingCall(call, {
      start(startNext) {
        const listener: ServerListener = {
          onReceiveMetadata(metadata, metadataNext) {
            const transportDeadline = epochMs(call.getDeadline());
            const inbound = acceptCall(metadata, options, transportDeadline, method.path);
            const callState = new InterceptedCall(inbound, intercepting);
            state = callState;
            const shed = shedStatus(inbound, options);
            if (shed !== undefined) {
              finishCall(callState);
              call.sendStatus(shed);
              return;
            }
            attachState(metadata, callState);
            // A deadline of ours ends the call with its reason. When it is the transport's own
            // (give or take the clock's tick), grpc-js's deadline timer ends the call already and
            // onCancel ends the context: no timer of ours until the handler observes the context.
            if (endsBeforeTransport(inbound.ctx, transportDeadline)) {
              callState.unlink = inbound.ctx.onDone((error) => {
                if (callState.finished || callState.responded) return;
                callState.end(contextStatus(error));
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
            else otel.with(state.inbound.otelContext, messageNext, undefined, message);
          },
          onReceiveHalfClose(halfCloseNext) {
            if (state === undefined) {
              halfCloseNext();
              return;
            }
            otel.with(state.inbound.otelContext, halfCloseNext);
            if (!handlerOnMetadata) checkBound(state);
          },
          onCancel() {
            if (state !== undefined) cancelledCall(state);
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
        if (state.finished) {
          if (state.endedByContext) state.inbound.late();
          return;
        }
        const error = state.inbound.ctx.error;
        if (error !== undefined) {
          // The context ended before this answer: it is not sent, the call ends with the cause.
          // Straight to the next call: ours holds statuses back while a message is in progress.
          state.endedByContext = true;
          finishCall(state);
          state.inbound.finish(false);
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
        if (live.finished) {
          if (live.endedByContext) live.inbound.late();
          return;
        }
        finishCall(live);
        // A unary response went out while the context was live: its OK stands.
        const out =
          live.responded && status.code === Status.OK
            ? status
            : ((settleStatus(live, status.code === Status.OK ? undefined : status) as
                | StatusObject
                | undefined) ?? status);
        statusNext(out);
        live.inbound.finish(true);
      },
    });
    return intercepting;
  };
}

/** A call whose context serverInterceptor built. */
class InterceptedCall implements ServerCall {
  readonly inbound: InboundCall;
  finished = false;
  responded = false;
  bound = false;
  endedByContext = false;
  unlink: () => void = noop;
  readonly #call: grpc.ServerInterceptingCall;

  constructor(inbound: InboundCall, call: grpc.ServerInterceptingCall) {
    this.inbound = inbound;
    this.#call = call;
  }

  end(status: StatusLike): void {
    this.endedByContext = true;
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
  const inbound = live.inbound;
  const ctx = inbound.ctx;
  const cause = ctx.cause;
  if (cause !== undefined) {
    inbound.countEnd();
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
    inbound.countEnd('downstream');
    return {
      code,
      details: status.details ?? status.message,
      metadata: withReason(status.metadata, reported),
    };
  }
  ctx.cancel({ code: 'error', message: Status[code] ?? String(code) });
  inbound.countEnd();
  return status;
}

/** The context of the call a handler serves, from its call object; undefined when ctxflow serves no context for it. */
export function contextOf(call: { metadata?: Metadata }): Context | undefined {
  return stateOf(call.metadata)?.inbound.scope;
}
