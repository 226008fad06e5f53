import { type Span, SpanStatusCode } from '@opentelemetry/api';
import type { Context } from './context.ts';
import type { ContextDoneError } from './errors.ts';

/** Span attribute: milliseconds left when a server or consumer span's request arrived (docs/tracing.md). */
export const ATTR_BUDGET_ARRIVAL = 'ctxflow.budget.arrival_ms';
/** Span attribute: the request's absolute deadline, epoch milliseconds. */
export const ATTR_DEADLINE = 'ctxflow.deadline.epoch_ms';
/** Span attribute: milliseconds of budget a client or producer span sent to its callee. */
export const ATTR_BUDGET_SENT = 'ctxflow.budget.sent_ms';
/** Span attribute: the cause code a span's context ended with. */
export const ATTR_CAUSE = 'ctxflow.cause.code';
/** Span attribute (on the end event): the cause's message, when it has one. */
export const ATTR_CAUSE_MESSAGE = 'ctxflow.cause.message';
/** Span event name: the span's context was cancelled or its deadline passed. */
export const EVENT_CONTEXT_END = 'ctxflow.context.end';

/**
 * Records an inbound request's budget on arrival (`budgetMs`, as `acceptInbound` gives it) and
 * deadline on its server or consumer span, and, when the context ends before the span does, an
 * end event with the cause and status ERROR. Returns a function that stops watching (call it when
 * the request is done).
 */
export function traceInbound(span: Span | undefined, ctx: Context, budgetMs: number | undefined): () => void {
  if (span === undefined || !span.isRecording()) return noop;
  const deadline = ctx.deadline;
  if (deadline !== undefined) {
    if (budgetMs !== undefined) span.setAttribute(ATTR_BUDGET_ARRIVAL, budgetMs);
    span.setAttribute(ATTR_DEADLINE, deadline);
  }
  return ctx.onDone((error) => traceEnd(span, error));
}

/** Records the end of a span's context: the cause as attribute and event, status ERROR. */
export function traceEnd(span: Span, error: ContextDoneError): void {
  if (!span.isRecording()) return;
  const cause = error.cause;
  span.setAttribute(ATTR_CAUSE, cause.code);
  span.addEvent(
    EVENT_CONTEXT_END,
    cause.message === undefined
      ? { [ATTR_CAUSE]: cause.code }
      : { [ATTR_CAUSE]: cause.code, [ATTR_CAUSE_MESSAGE]: cause.message },
  );
  span.setStatus({ code: SpanStatusCode.ERROR, message: cause.code });
}

function noop(): void {}
