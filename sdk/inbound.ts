import { type Context as OtelContext, type TextMapGetter, trace } from '@opentelemetry/api';
import type { CauseCode } from './cause.ts';
import {
  DEADLINE_HEADER,
  DEFAULT_MAX_INBOUND_MS,
  type DecodeOptions,
  inboundDeadline,
  TIMEOUT_HEADER,
} from './codec.ts';
import { background, type CancelableContext, newContext } from './context.ts';
import { FOREIGN_HEADERS, type ForeignHeader, foreignDeadline } from './foreign.ts';
import { extractTrace } from './propagation.ts';
import { setContext } from './scope.ts';

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

/** An inbound call's context and the OpenTelemetry context to run its handler in. */
export interface InboundCall {
  /** The call's context; the adapter ends it when the transport does, and cancels it once the call is over. */
  readonly ctx: CancelableContext;
  /** The OpenTelemetry context holding `ctx` (and the remote trace parent when no span is active). */
  readonly otelContext: OtelContext;
  /** The cause to use when the caller goes away: `upstream_cancelled` from a ctxflow hop, else `client_disconnected`. */
  readonly callerGoneCause: CauseCode;
  /** The clock (epoch ms) the deadline was computed at. */
  readonly arrivedAt: number;
  /** The budget on arrival in milliseconds, `deadline - arrivedAt` (at least 0); undefined without a deadline. */
  readonly budgetMs: number | undefined;
}

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
): InboundCall {
  const otelContext = extractTrace(carrier, getter);
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
  const ctx = newContext(background(), deadline, trace.getSpanContext(otelContext)?.traceId);
  return {
    ctx,
    otelContext: setContext(otelContext, ctx),
    callerGoneCause: trusted && sent !== undefined ? 'upstream_cancelled' : 'client_disconnected',
    arrivedAt: now,
    budgetMs: ctx.deadline === undefined ? undefined : Math.max(0, ctx.deadline - now),
  };
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
