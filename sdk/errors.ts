import type { Cause } from './cause.ts';

/** Thrown (and used as the signal's reason) when a context is done; `cause` says why. */
export abstract class ContextDoneError extends Error {
  declare readonly cause: Cause;

  constructor(cause: Cause) {
    super(cause.message ? `${cause.code}: ${cause.message}` : cause.code, { cause });
  }
}

/** The context's deadline passed. */
export class DeadlineExceededError extends ContextDoneError {
  override readonly name = 'DeadlineExceededError';
}

/** The context was cancelled for any reason other than its deadline. */
export class CancelledError extends ContextDoneError {
  override readonly name = 'CancelledError';
}

/**
 * The error that reports `cause`: a DeadlineExceededError for `deadline_exceeded`, a CancelledError
 * otherwise. It has no stack: one error is shared by every place that observes the end, so no single
 * stack would be right, and capturing one costs ten times the rest of a request's context handling.
 */
export function errorFor(cause: Cause): ContextDoneError {
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  try {
    return cause.code === 'deadline_exceeded' ? new DeadlineExceededError(cause) : new CancelledError(cause);
  } finally {
    Error.stackTraceLimit = limit;
  }
}
