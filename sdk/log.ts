import { context as otel, trace } from '@opentelemetry/api';
import { current } from './context.ts';

/** The fields `logFields()` adds to a log line; each is absent when unknown. */
export interface LogFields {
  /** The W3C trace id of the active span, or of the current context's request. */
  trace_id?: string;
  /** The id of the active span. */
  span_id?: string;
  /** Whole milliseconds left before the current context's deadline. */
  budget_ms?: number;
}

/**
 * Trace id, span id and remaining budget of the code that is running, for every log line: with
 * pino, `pino({ mixin: logFields })`; with any other logger, spread it into the line's fields.
 */
export function logFields(): LogFields {
  const fields: LogFields = {};
  const span = trace.getSpanContext(otel.active());
  const ctx = current();
  const traceId = span?.traceId ?? ctx.traceId;
  if (traceId !== undefined) fields.trace_id = traceId;
  if (span !== undefined) fields.span_id = span.spanId;
  if (ctx.deadline !== undefined) fields.budget_ms = Math.floor(ctx.remaining());
  return fields;
}
