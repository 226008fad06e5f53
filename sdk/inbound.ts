import {
  type Attributes,
  type Context as OtelContext,
  type Span,
  type TextMapGetter,
  trace,
} from '@opentelemetry/api';
import type { Cause, CauseCode } from './cause.ts';
import {
  DEADLINE_HEADER,
  DEFAULT_MAX_INBOUND_MS,
  type DecodeOptions,
  inboundDeadline,
  TIMEOUT_HEADER,
} from './codec.ts';
import { background, type CancelableContext, cancelAt, newContext } from './context.ts';
import type { ContextDoneError } from './errors.ts';
import { FOREIGN_HEADERS, type ForeignHeader, foreignDeadline } from './foreign.ts';
import {
  type CauseSource,
  countEnded,
  countOutlived,
  countShed,
  hopAttributes,
  recordArrival,
  type Transport,
} from './metrics.ts';
import { extractTraceParts } from './propagation.ts';
import { inboundOtelContext, setContext } from './scope.ts';
import { traceInbound } from './tracing.ts';

/** How a server side of an adapter turns an inbound call into a context. */
export interface InboundOptions extends DecodeOptions {
  /** This service's own budget per call in milliseconds; the earlier of it and the caller's wins. */
  budgetMs?: number;
  /** Honour the caller's deadline headers. Default true; set false at a public edge. */
  trustInbound?: boolean;
  /**
   * Which deadline headers of other stacks are honoured beside ctxflow's own, when the caller is
   * trusted: the earliest valid one wins. Default all (`grpc-timeout`, `connect-timeout-ms`,
   * `x-envoy-expected-rq-timeout-ms`); `[]` honours ctxflow's headers only.
   */
  foreignHeaders?: readonly ForeignHeader[];
}

/** A cause the end of a request is counted with: the shedding of one that arrived with too little left. */
const SHED: Cause = Object.freeze({ code: 'deadline_exceeded', message: 'budget below minimum' });

/**
 * A caller going away within this many milliseconds of the call's deadline counts as the deadline:
 * transports that end a call at its deadline (grpc-js's timer) report it as a caller gone, and a
 * caller that gives up at its own deadline is a deadline too.
 */
export const NEAR_DEADLINE_MS = 5;

/**
 * The lifecycle of one inbound call, the same on every transport. `acceptInbound` builds it; the
 * adapter calls, from its transport's events: `trace` (the server span), `shed` (on arrival),
 * `narrow` (an inner layer's tighter budget), `callerGone` (the caller went away), `countEnd` (the
 * context ended before the answer), `late` (the handler answered after that) and `finish` (the
 * call is over); a queue consumer that serves an expired message anyway `renew`s its context.
 * Each counts what it decides once: one arrival sample, one end, one late answer.
 */
export class InboundCall {
  /** The cause to use when the caller goes away: `upstream_cancelled` from a ctxflow hop, else `client_disconnected`. */
  readonly callerGoneCause: CauseCode;
  /** The clock (epoch ms) the deadline was computed at. */
  readonly arrivedAt: number;
  /** The budget on arrival in milliseconds, `deadline - arrivedAt` (at least 0); undefined without a deadline. */
  readonly budgetMs: number | undefined;
  /** The metric attributes (`hopAttributes`); an adapter that learns the operation later (an HTTP route) sets them then. */
  attributes: Attributes;
  /** The context the handler runs in: `ctx`, or the child an inner layer narrowed it to. */
  scope: CancelableContext;
  #ctx: CancelableContext;
  #otelContext: OtelContext;
  #untrace: () => void = noop;
  #counted = false;
  #late = false;

  constructor(
    ctx: CancelableContext,
    otelContext: OtelContext,
    callerGoneCause: CauseCode,
    arrivedAt: number,
    attributes: Attributes,
  ) {
    this.#ctx = ctx;
    this.scope = ctx;
    this.#otelContext = otelContext;
    this.callerGoneCause = callerGoneCause;
    this.arrivedAt = arrivedAt;
    this.budgetMs = ctx.deadline === undefined ? undefined : Math.max(0, ctx.deadline - arrivedAt);
    this.attributes = attributes;
  }

  /** The call's context; the adapter ends it when the transport does, and `finish` cancels it. */
  get ctx(): CancelableContext {
    return this.#ctx;
  }

  /** The OpenTelemetry context holding `ctx` (and the remote trace parent when no span is active). */
  get otelContext(): OtelContext {
    return this.#otelContext;
  }

  /**
   * Serves anyway a call whose context ended before it was served (a queued message that expired,
   * under a policy that runs it): a fresh context of the call's trace, ending `budgetMs` from now,
   * replaces `ctx`, `scope` and `otelContext`. The budget on arrival stays what it was. Before `trace`.
   */
  renew(budgetMs: number): CancelableContext {
    const ctx = newContext(background(), Date.now() + budgetMs, this.#ctx.traceId);
    this.#ctx.cancel();
    this.#ctx = ctx;
    this.scope = ctx;
    this.#otelContext = setContext(this.#otelContext, ctx);
    return ctx;
  }

  /** Records the budget on arrival and the deadline on the call's server span, and the context's end if it comes first. */
  trace(span: Span | undefined): void {
    this.#untrace = traceInbound(span, this.#ctx, this.budgetMs);
  }

  /**
   * The one shedding rule of every transport, judged on arrival so that the answer depends on the
   * call alone, not on a busy moment since: a call that arrived with less than `minBudgetMs` left
   * ends at once (`deadline_exceeded` when nothing was left, else `deadline_exceeded` "budget below
   * minimum"), is counted as shed, and its handler must not run. Returns the error to answer
   * with, or undefined for a call to serve.
   */
  shed(minBudgetMs: number): ContextDoneError | undefined {
    const budget = this.budgetMs;
    if (budget === undefined || budget >= minBudgetMs) return undefined;
    cancelAt(this.#ctx, SHED, this.arrivedAt);
    this.#counted = true;
    countShed(this.attributes);
    recordArrival(this.attributes, budget);
    return this.#ctx.error;
  }

  /**
   * Narrows the call's context for an inner layer whose `budgetMs` leaves less than the call has
   * (`narrowInbound`): the handler's context from now on (`scope`).
   */
  narrow(budgetMs: number | undefined): CancelableContext {
    this.scope = narrowInbound(this.scope, budgetMs);
    return this.scope;
  }

  /**
   * The caller went away before the answer: the context ends with `deadline_exceeded` when that is
   * within NEAR_DEADLINE_MS of the deadline, else with `callerGoneCause`, and the end is counted.
   */
  callerGone(): void {
    const ctx = this.#ctx;
    const deadline = ctx.deadline;
    ctx.cancel(
      deadline !== undefined && Date.now() >= deadline - NEAR_DEADLINE_MS
        ? 'deadline_exceeded'
        : this.callerGoneCause,
    );
    this.countEnd();
  }

  /**
   * Counts, once, that the call's context ended before its answer (`ctxflow.context.ended`), by
   * cause: `downstream` when the handler passed on a callee's end. Nothing while the context is live.
   */
  countEnd(source: CauseSource = 'local'): void {
    const cause = this.#ctx.cause;
    if (this.#counted || cause === undefined) return;
    this.#counted = true;
    countEnded(this.attributes, cause.code, source);
  }

  /** The handler answered after the call was answered for its context's end: counted once as outlived work. */
  late(): void {
    if (this.#late) return;
    this.#late = true;
    countOutlived(`${this.attributes['ctxflow.transport']}.response`, this.#ctx.cause?.code ?? 'cancelled');
  }

  /**
   * The call is over. `complete`: its answer went out whole (not a cancellation: the context's end
   * is not traced); otherwise an end the context had is counted. The context is cancelled (the
   * work the handler left behind stops) and the budget on arrival recorded.
   */
  finish(complete: boolean): void {
    if (complete) this.#untrace();
    else this.countEnd();
    this.#ctx.cancel();
    recordArrival(this.attributes, this.budgetMs);
  }
}

function noop(): void {}

const NO_ATTRIBUTES: Attributes = Object.freeze({});

/**
 * Builds the context of an inbound call: the trace from the carrier, and a deadline that is the
 * earliest of the caller's (when trusted: ctxflow's headers and the honoured `foreignHeaders`),
 * the transport's own (`transportDeadline`, e.g. grpc-timeout on gRPC, which the transport
 * enforces even from an untrusted caller) and this service's budget, all but the last capped at
 * `maxInboundMs`.
 */
export function acceptInbound(
  carrier: unknown,
  getter: TextMapGetter,
  options: InboundOptions = {},
  transportDeadline?: number,
  transport?: Transport,
  operation?: string,
): InboundCall {
  const { base, spanContext } = extractTraceParts(carrier, getter);
  const trusted = options.trustInbound ?? true;
  const now = Date.now();
  const max = options.maxInboundMs ?? DEFAULT_MAX_INBOUND_MS;
  // Untrusted deadline headers are not even decoded: they must not show up in the rejection counts.
  const sent = trusted
    ? inboundDeadline(getter.get(carrier, TIMEOUT_HEADER), getter.get(carrier, DEADLINE_HEADER), options, now)
    : undefined;
  const foreign = trusted
    ? foreignDeadline(carrier, getter, options.foreignHeaders ?? FOREIGN_HEADERS, max, now)
    : undefined;
  // A transport's own deadline (grpc-timeout) ends the call whether we trust the caller or not.
  let deadline = trusted ? earliest(earliest(sent, foreign), transportDeadline) : transportDeadline;
  if (deadline !== undefined && deadline > now + max) deadline = now + max;
  if (options.budgetMs !== undefined) deadline = earliest(deadline, now + options.budgetMs);
  const traceId = spanContext === undefined ? trace.getSpanContext(base)?.traceId : spanContext.traceId;
  const ctx = newContext(background(), deadline, traceId);
  const fromService = sent !== undefined || transport?.callersAreServices === true;
  return new InboundCall(
    ctx,
    inboundOtelContext(base, spanContext, ctx),
    trusted && fromService ? 'upstream_cancelled' : 'client_disconnected',
    now,
    transport === undefined ? NO_ATTRIBUTES : hopAttributes(transport, operation),
  );
}

/**
 * The context an inner server layer gives its handler when an outer layer has accepted the call
 * already (`outer`): `outer` itself, or, when `budgetMs` leaves less than `outer` has, a child
 * ending then, whose end ends `outer` with the same cause, so that the outer layer answers the
 * call once, with the inner deadline's cause. Nothing is read from the carrier again.
 */
export function narrowInbound(outer: CancelableContext, budgetMs: number | undefined): CancelableContext {
  if (budgetMs === undefined || Number.isNaN(budgetMs)) return outer;
  const deadline = Date.now() + budgetMs;
  if (outer.deadline !== undefined && outer.deadline <= deadline) return outer;
  const child = newContext(outer, deadline);
  child.onDone((error) => outer.cancel(error.cause));
  return child;
}

function earliest(a: number | undefined, b: number | undefined): number | undefined {
  if (a === undefined) return b;
  if (b === undefined) return a;
  return Math.min(a, b);
}
