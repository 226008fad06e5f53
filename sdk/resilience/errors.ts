import type { Cause } from '../cause.ts';

/**
 * A call a resilience policy refused or stopped without running it to the end, with a typed cause
 * (`circuit_open`, `bulkhead_full`, `insufficient_budget`, `shutdown`). The cause's code doubles as
 * a cancel cause, so a handler can end its request with it.
 */
export class ResilienceError extends Error {
  declare readonly cause: Cause;
  override readonly name: string = 'ResilienceError';

  constructor(cause: Cause) {
    super(cause.message ? `${cause.code}: ${cause.message}` : cause.code, { cause });
  }

  /** The cause code: what kind of refusal this is. */
  get code(): string {
    return this.cause.code;
  }
}

/** The circuit breaker is open (or its half-open probes are taken): the call was not made. */
export class CircuitOpenError extends ResilienceError {
  override readonly name = 'CircuitOpenError';
  /** Milliseconds until the breaker lets a probe through, 0 when half-open. */
  readonly retryAfterMs: number;

  constructor(breaker: string, retryAfterMs: number) {
    super({ code: 'circuit_open', message: breaker });
    this.retryAfterMs = retryAfterMs;
  }
}

/** Every slot of the bulkhead and every place in its queue is taken: the call was not made. */
export class BulkheadFullError extends ResilienceError {
  override readonly name = 'BulkheadFullError';

  constructor(bulkhead: string) {
    super({ code: 'bulkhead_full', message: bulkhead });
  }
}

/** The context has less time left than the work is expected to take: the call was not made. */
export class InsufficientBudgetError extends ResilienceError {
  override readonly name = 'InsufficientBudgetError';
  /** What was left and what the work was expected to take, in milliseconds. */
  readonly remainingMs: number;
  readonly expectedMs: number;

  constructor(work: string, remainingMs: number, expectedMs: number) {
    super({ code: 'insufficient_budget', message: work });
    this.remainingMs = remainingMs;
    this.expectedMs = expectedMs;
  }
}

/** The process is shutting down and accepts no new work. */
export class ShuttingDownError extends ResilienceError {
  override readonly name = 'ShuttingDownError';

  constructor() {
    super({ code: 'shutdown', message: 'not accepting new work' });
  }
}
