import { createContextKey, context as otel } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';

/** The OpenTelemetry context key under which the ctxflow context travels. */
export const CONTEXT_KEY = createContextKey('ctxflow.context');

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

/** Runs `fn` with `value` stored under CONTEXT_KEY in the active OpenTelemetry context. */
export function runWith<T>(value: unknown, fn: () => T): T {
  ensureContextManager();
  return otel.with(otel.active().setValue(CONTEXT_KEY, value), fn);
}

/** The value stored under CONTEXT_KEY in the active OpenTelemetry context. */
export function activeValue(): unknown {
  return otel.active().getValue(CONTEXT_KEY);
}
