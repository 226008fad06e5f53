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

/** The ctxflow context held by an OpenTelemetry context, as `trace.getSpan` reads a span. */
export function getContext(otelContext: OtelContext): Context | undefined {
  return otelContext.getValue(CONTEXT_KEY) as Context | undefined;
}

/** A copy of an OpenTelemetry context holding `ctx`, as `trace.setSpan` does for a span. */
export function setContext(otelContext: OtelContext, ctx: Context): OtelContext {
  return otelContext.setValue(CONTEXT_KEY, ctx);
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
