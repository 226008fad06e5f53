import { createContextKey, type Context as OtelContext, context as otel } from '@opentelemetry/api';
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

/**
 * An OpenTelemetry context made of one value over its parent. OpenTelemetry's own copies its
 * whole map and makes three closures at each `setValue` (about 1 KB each on a request's path,
 * where the trace parent, the ctxflow context and a fetch call are each set); this is one small
 * object, and `setValue` on it makes another. A chain is folded back into the parent's kind of
 * context beyond MAX_DEPTH values, so that code deriving each context from the one before (a
 * poller re-arming itself in its own callback) neither retains every ancestor nor slows lookups.
 */
class ValueContext implements OtelContext {
  readonly #parent: OtelContext;
  readonly #key: symbol;
  readonly #value: unknown;
  readonly #depth: number;

  constructor(parent: OtelContext, key: symbol, value: unknown, depth: number) {
    this.#parent = parent;
    this.#key = key;
    this.#value = value;
    this.#depth = depth;
  }

  get depth(): number {
    return this.#depth;
  }

  getValue(key: symbol): unknown {
    return key === this.#key ? this.#value : this.#parent.getValue(key);
  }

  setValue(key: symbol, value: unknown): OtelContext {
    return withValue(this, key, value);
  }

  deleteValue(key: symbol): OtelContext {
    // OpenTelemetry reads a deleted key as undefined, as it reads a key never set.
    return withValue(this, key, undefined);
  }

  /** The same values on a context of the chain's base kind, with no chain above it. */
  fold(): OtelContext {
    const values: [symbol, unknown][] = [];
    let at: OtelContext = this;
    while (at instanceof ValueContext) {
      values.push([at.#key, at.#value]);
      at = at.#parent;
    }
    // Oldest first: a nearer value of the same key wins.
    for (let i = values.length - 1; i >= 0; i--) {
      const [key, value] = values[i] as [symbol, unknown];
      at = value === undefined ? at.deleteValue(key) : at.setValue(key, value);
    }
    return at;
  }
}

const MAX_DEPTH = 8;

// The key of a link that holds no value: what `chained` puts over a context of another kind.
const NO_KEY = Symbol('ctxflow.no-key');

/**
 * `otelContext` itself when its `setValue` copies nothing, or a context with its values whose
 * `setValue` does not copy them: for code about to set a few values on it (`trace.setSpanContext`).
 */
export function chained(otelContext: OtelContext): OtelContext {
  return otelContext instanceof ValueContext
    ? otelContext
    : new ValueContext(otelContext, NO_KEY, undefined, 1);
}

/** `otelContext` with `key` set to `value`, as `otelContext.setValue` gives it, without copying its values. */
export function withValue(otelContext: OtelContext, key: symbol, value: unknown): OtelContext {
  if (!(otelContext instanceof ValueContext)) return new ValueContext(otelContext, key, value, 1);
  const depth = otelContext.depth + 1;
  if (depth <= MAX_DEPTH) return new ValueContext(otelContext, key, value, depth);
  return otelContext.fold().setValue(key, value);
}

/** The ctxflow context held by an OpenTelemetry context, as `trace.getSpan` reads a span. */
export function getContext(otelContext: OtelContext): Context | undefined {
  return otelContext.getValue(CONTEXT_KEY) as Context | undefined;
}

/** A copy of an OpenTelemetry context holding `ctx`, as `trace.setSpan` does for a span. */
export function setContext(otelContext: OtelContext, ctx: Context): OtelContext {
  return withValue(otelContext, CONTEXT_KEY, ctx);
}

/** Runs `fn` with `ctx` stored in the active OpenTelemetry context. */
export function runWith<T>(ctx: Context, fn: () => T): T {
  ensureContextManager();
  return otel.with(withValue(otel.active(), CONTEXT_KEY, ctx), fn);
}

/** The ctxflow context stored in the active OpenTelemetry context. */
export function activeContext(): Context | undefined {
  return otel.active().getValue(CONTEXT_KEY) as Context | undefined;
}
