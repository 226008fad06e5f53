import {
  type Context as OtelContext,
  context as otel,
  propagation,
  type TextMapGetter,
  type TextMapPropagator,
  type TextMapSetter,
  trace,
} from '@opentelemetry/api';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { background, type Context, newContext } from './context.ts';
import { CONTEXT_KEY, ensureContextManager } from './scope.ts';
import {
  DEADLINE_HEADER,
  DEFAULT_RESERVE_MS,
  encodeDeadline,
  encodeTimeout,
  inboundDeadline,
  TIMEOUT_HEADER,
  type WireOptions,
} from './wire.ts';

/**
 * An OpenTelemetry TextMapPropagator for ctxflow's deadline headers. Compose it with the
 * W3C trace context propagator so any OTel-instrumented transport carries the budget.
 */
export class DeadlinePropagator implements TextMapPropagator {
  readonly #options: WireOptions;

  constructor(options: WireOptions = {}) {
    // Which transport it serves, and whether that is a queue, is not known here: send both headers.
    this.#options = { ...options, sendDeadline: true };
  }

  inject(otelContext: OtelContext, carrier: unknown, setter: TextMapSetter): void {
    const ctx = otelContext.getValue(CONTEXT_KEY) as Context | undefined;
    if (ctx !== undefined) injectDeadline(ctx, carrier, setter, this.#options);
  }

  extract(otelContext: OtelContext, carrier: unknown, getter: TextMapGetter): OtelContext {
    const deadline = inboundDeadline(
      getter.get(carrier, TIMEOUT_HEADER),
      getter.get(carrier, DEADLINE_HEADER),
      this.#options,
    );
    if (deadline === undefined) return otelContext;
    const traceId = trace.getSpanContext(otelContext)?.traceId;
    return otelContext.setValue(CONTEXT_KEY, newContext(background(), deadline, traceId));
  }

  fields(): string[] {
    return [TIMEOUT_HEADER, DEADLINE_HEADER];
  }
}

/**
 * Writes `ctx-timeout` (and with `sendDeadline`, `ctx-deadline`) for `deadline`, by default the
 * deadline of `ctx`, into a carrier; writes nothing when there is none.
 */
export function injectDeadline(
  ctx: Context,
  carrier: unknown,
  setter: TextMapSetter,
  options: WireOptions = {},
  deadline: number | undefined = ctx.deadline,
): void {
  if (deadline === undefined) return;
  const reserve = options.reserveMs ?? DEFAULT_RESERVE_MS;
  setter.set(carrier, TIMEOUT_HEADER, encodeTimeout(deadline - Date.now(), reserve));
  if (options.sendDeadline) setter.set(carrier, DEADLINE_HEADER, encodeDeadline(deadline, reserve));
}

const w3c = new W3CTraceContextPropagator();

/**
 * The propagator for trace headers: the registered global one when it handles `traceparent`
 * (a tracing SDK is set up), otherwise W3C trace context alone, so trace ids flow without an SDK.
 */
function tracePropagator(): TextMapPropagator {
  return propagation.fields().includes('traceparent') ? propagation : w3c;
}

/**
 * Writes the trace and deadline headers of `ctx` into an outbound carrier (HTTP headers, metadata).
 * `deadline` replaces the context's when the transport call has an earlier one of its own.
 */
export function injectContext(
  ctx: Context,
  carrier: unknown,
  setter: TextMapSetter,
  options: WireOptions = {},
  deadline: number | undefined = ctx.deadline,
): void {
  tracePropagator().inject(otel.active(), carrier, setter);
  injectDeadline(ctx, carrier, setter, options, deadline);
}

/** What an inbound carrier says: the OTel context to run in, and the deadline it grants. */
export interface Inbound {
  /** The active OTel context, with the remote trace parent when no instrumentation set a span. */
  readonly otelContext: OtelContext;
  /** The deadline granted by the sender, clamped; undefined when none or when invalid. */
  readonly deadline: number | undefined;
  /** The trace id of the request, when known. */
  readonly traceId: string | undefined;
}

/**
 * The OpenTelemetry context to run an inbound call in: the active one when an instrumentation has
 * already started a server span for it, otherwise the active one plus the carrier's trace parent.
 */
export function extractTrace(carrier: unknown, getter: TextMapGetter): OtelContext {
  // The caller runs its handler in the returned context: that needs a working context manager.
  ensureContextManager();
  const active = otel.active();
  return trace.getSpan(active) === undefined ? tracePropagator().extract(active, carrier, getter) : active;
}

/** Reads trace and deadline headers from an inbound carrier (see `extractTrace` and `inboundDeadline`). */
export function extractContext(carrier: unknown, getter: TextMapGetter, options: WireOptions = {}): Inbound {
  const otelContext = extractTrace(carrier, getter);
  return {
    otelContext,
    deadline: inboundDeadline(
      getter.get(carrier, TIMEOUT_HEADER),
      getter.get(carrier, DEADLINE_HEADER),
      options,
    ),
    traceId: trace.getSpanContext(otelContext)?.traceId,
  };
}
