import {
  createContextKey,
  type Context as OtelContext,
  context as otel,
  type Span,
  type SpanContext,
  trace,
} from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import type { Context } from './context.ts';

/**
 * Where a ctxflow context travels in an OpenTelemetry context. `createContextKey` makes a
 * `Symbol.for` key, so every copy of ctxflow in the process with the same major version shares
 * it; the version changes when the shape of a context does.
 */
const CONTEXT_KEY = createContextKey('ctxflow.context.v1');

let managerChecked = false;

/**
 * Registers OpenTelemetry's AsyncLocalStorage context manager unless one works already,
 * so contexts flow through awaits even in a process with no tracing SDK.
 */
export function ensureContextManager(): void {
  if (managerChecked) return;
  managerChecked = true;
  const probe = createContextKey('ctxflow.probe');
  const works = otel.with(otel.active().setValue(probe, true), () => otel.active().getValue(probe) === true);
  if (!works) otel.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
}

/** The ctxflow context held by an OpenTelemetry context, as `trace.getSpan` reads a span. */
export function getContext(otelContext: OtelContext): Context | undefined {
  return otelContext.getValue(CONTEXT_KEY) as Context | undefined;
}

/** A copy of an OpenTelemetry context holding `ctx`, as `trace.setSpan` does for a span. */
export function setContext(otelContext: OtelContext, ctx: Context): OtelContext {
  return otelContext.setValue(CONTEXT_KEY, ctx);
}

const SPAN_KEY = createContextKey('OpenTelemetry Context Key SPAN');

/**
 * An inbound call's OpenTelemetry context: `base` plus a span context (as `trace.setSpanContext`
 * would add it) and `ctx`, in one object with shared methods. OpenTelemetry's own contexts copy a
 * map and make three closures per value set; this one makes the span on first read, and the
 * equivalent chain of OpenTelemetry contexts only when a value is set on it or deleted.
 */
class InboundOtelContext implements OtelContext {
  readonly #base: OtelContext;
  readonly #spanContext: SpanContext | undefined;
  readonly #ctx: Context;
  #span: Span | undefined;
  #whole: OtelContext | undefined;

  constructor(base: OtelContext, spanContext: SpanContext | undefined, ctx: Context) {
    this.#base = base;
    this.#spanContext = spanContext;
    this.#ctx = ctx;
  }

  getValue(key: symbol): unknown {
    if (key === CONTEXT_KEY) return this.#ctx;
    const spanContext = this.#spanContext;
    if (key === SPAN_KEY && spanContext !== undefined) {
      this.#span ??= trace.wrapSpanContext(spanContext);
      return this.#span;
    }
    return this.#base.getValue(key);
  }

  setValue(key: symbol, value: unknown): OtelContext {
    return this.#materialized().setValue(key, value);
  }

  deleteValue(key: symbol): OtelContext {
    return this.#materialized().deleteValue(key);
  }

  #materialized(): OtelContext {
    if (this.#whole === undefined) {
      const spanContext = this.#spanContext;
      const withSpan =
        spanContext === undefined ? this.#base : trace.setSpan(this.#base, this.getValue(SPAN_KEY) as Span);
      this.#whole = withSpan.setValue(CONTEXT_KEY, this.#ctx);
    }
    return this.#whole;
  }
}

/** `base` with `spanContext` (when given) and `ctx` set, as one object (see InboundOtelContext). */
export function inboundOtelContext(
  base: OtelContext,
  spanContext: SpanContext | undefined,
  ctx: Context,
): OtelContext {
  return new InboundOtelContext(base, spanContext, ctx);
}

/** Runs `fn` with `ctx` stored in the active OpenTelemetry context. */
export function runWith<T>(ctx: Context, fn: () => T): T {
  ensureContextManager();
  return otel.with(otel.active().setValue(CONTEXT_KEY, ctx), fn);
}

/** The ctxflow context stored in the active OpenTelemetry context. */
export function activeContext(): Context | undefined {
  return otel.active().getValue(CONTEXT_KEY) as Context | undefined;
}
