import {
  type Context as OtelContext,
  context as otel,
  propagation,
  type SpanContext,
  type TextMapGetter,
  type TextMapPropagator,
  type TextMapSetter,
  TraceFlags,
  trace,
} from '@opentelemetry/api';
import {
  DEADLINE_HEADER,
  DEFAULT_RESERVE_MS,
  type EncodeOptions,
  encodeDeadline,
  encodeTimeout,
  inboundDeadline,
  TIMEOUT_HEADER,
  type WireOptions,
} from './codec.ts';
import { background, newContext } from './context.ts';
import { chained, ensureContextManager, getContext, setContext } from './scope.ts';
import { TraceContextPropagator } from './traceparent.ts';

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
    const ctx = getContext(otelContext);
    if (ctx !== undefined) injectDeadline(carrier, setter, ctx.deadline, this.#options);
  }

  extract(otelContext: OtelContext, carrier: unknown, getter: TextMapGetter): OtelContext {
    const deadline = inboundDeadline(
      getter.get(carrier, TIMEOUT_HEADER),
      getter.get(carrier, DEADLINE_HEADER),
      this.#options,
    );
    if (deadline === undefined) return otelContext;
    const traceId = trace.getSpanContext(otelContext)?.traceId;
    return setContext(otelContext, newContext(background(), deadline, traceId));
  }

  fields(): string[] {
    return [TIMEOUT_HEADER, DEADLINE_HEADER];
  }
}

/**
 * Writes `ctx-timeout` (unless `sendTimeout` is false) and with `sendDeadline`, `ctx-deadline`
 * for `deadline` into a carrier; writes nothing when there is none.
 */
export function injectDeadline<C>(
  carrier: C,
  setter: TextMapSetter<C>,
  deadline: number | undefined,
  options: EncodeOptions & { sendTimeout?: boolean } = {},
): void {
  if (deadline === undefined) return;
  const reserve = options.reserveMs ?? DEFAULT_RESERVE_MS;
  if (options.sendTimeout !== false) {
    setter.set(carrier, TIMEOUT_HEADER, encodeTimeout(deadline - Date.now(), reserve));
  }
  if (options.sendDeadline) setter.set(carrier, DEADLINE_HEADER, encodeDeadline(deadline, reserve));
}

const w3c = new TraceContextPropagator();

/** True when a tracing SDK registered a propagator that writes `traceparent`. */
function tracingPropagator(): boolean {
  return propagation.fields().includes('traceparent');
}

/**
 * The propagator for trace headers: the registered global one when it handles `traceparent`
 * (a tracing SDK is set up), otherwise W3C trace context alone, so trace ids flow without an SDK.
 */
function tracePropagator(): TextMapPropagator {
  return tracingPropagator() ? propagation : w3c;
}

/** Writes the trace headers of `otelContext` into an outbound carrier. */
export function injectTrace<C>(otelContext: OtelContext, carrier: C, setter: TextMapSetter<C>): void {
  tracePropagator().inject(otelContext, carrier, setter as TextMapSetter);
}

/**
 * The OpenTelemetry context to run an inbound call in: the active one when an instrumentation has
 * already started a server span for it; otherwise the active one plus the carrier's trace parent;
 * and with no trace parent and no tracing SDK, a new W3C trace (a non-recording span context), so
 * that logs on every hop can be correlated by a trace id even without an SDK.
 */
export function extractTrace(carrier: unknown, getter: TextMapGetter): OtelContext {
  // The caller runs its handler in the returned context: that needs a working context manager.
  ensureContextManager();
  const active = otel.active();
  if (trace.getSpan(active) !== undefined) return active;
  if (tracingPropagator()) return propagation.extract(active, carrier, getter);
  // The trace parent goes on a context that the caller's next values (its ctxflow context) join
  // without a copy of the whole.
  return trace.setSpanContext(chained(active), w3c.extractSpanContext(carrier, getter) ?? newSpanContext());
}

// Not imported: the ES module facade of node:crypto reads every export, its lazy webcrypto getters
// too, which sets up Web Crypto (about 3 ms at start-up) for nothing.
const { randomFillSync } = process.getBuiltinModule('node:crypto');
const TRACE_ID_BYTES = 16;
const SPAN_ID_BYTES = 8;
// Random bytes drawn a few kilobytes at a time: one system call per 170 new traces.
const pool = Buffer.allocUnsafe(4096);
let poolOffset = pool.length;

/**
 * A new trace's span context, not sampled: random trace and span ids in lower-case hex, neither all
 * zeros (an invalid id in W3C trace context), from one conversion of 24 bytes.
 */
function newSpanContext(): SpanContext {
  const bytes = TRACE_ID_BYTES + SPAN_ID_BYTES;
  for (;;) {
    if (poolOffset + bytes > pool.length) {
      randomFillSync(pool);
      poolOffset = 0;
    }
    const start = poolOffset;
    poolOffset += bytes;
    const middle = start + TRACE_ID_BYTES;
    if (allZeros(start, middle) || allZeros(middle, poolOffset)) continue;
    const hex = pool.toString('hex', start, poolOffset);
    return {
      traceId: hex.slice(0, 2 * TRACE_ID_BYTES),
      spanId: hex.slice(2 * TRACE_ID_BYTES),
      traceFlags: TraceFlags.NONE,
    };
  }
}

function allZeros(start: number, end: number): boolean {
  for (let i = start; i < end; i++) if (pool[i] !== 0) return false;
  return true;
}
