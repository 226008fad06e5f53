/**
 * The two values the OpenTelemetry SDK keeps in a Context that ctxflow reads: whether tracing is
 * suppressed (an exporter's own requests), and the RPC metadata holding a server's span. Read by
 * their `Symbol.for` keys, the same `@opentelemetry/core` makes, so that the core needs
 * `@opentelemetry/api` alone and still sees what an SDK sets.
 */
import { createContextKey, type Context as OtelContext, type Span } from '@opentelemetry/api';

const SUPPRESS_TRACING_KEY = createContextKey('OpenTelemetry SDK Context Key SUPPRESS_TRACING');
const RPC_METADATA_KEY = createContextKey('OpenTelemetry SDK Context Key RPC_METADATA');

/** True when an OpenTelemetry SDK suppressed tracing in `otelContext` (`suppressTracing` of `@opentelemetry/core`). */
export function isTracingSuppressed(otelContext: OtelContext): boolean {
  return otelContext.getValue(SUPPRESS_TRACING_KEY) === true;
}

/** The span instrumentation-http stored for the server request of `otelContext` (`getRPCMetadata` of `@opentelemetry/core`). */
export function rpcServerSpan(otelContext: OtelContext): Span | undefined {
  return (otelContext.getValue(RPC_METADATA_KEY) as { span?: Span } | undefined)?.span;
}
