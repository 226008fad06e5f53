import type { Cause } from './cause.ts';

/**
 * Marks ctxflow's context errors across copies of the library in one process (a monorepo or a
 * nested dependency may load two): its value says which kind, and `instanceof` checks it.
 * Versioned with the wire format, like the context key.
 */
const BRAND = Symbol.for('ctxflow.error.v1');
type Kind = 'deadline_exceeded' | 'cancelled';
type Branded = { [BRAND]?: unknown };

/** Thrown (and used as the signal's reason) when a context is done; `cause` says why. */
export abstract class ContextDoneError extends Error {
  declare readonly cause: Cause;
  /** The kind this class stands for; undefined for the base class, which stands for both. */
  protected static readonly kind: Kind | undefined = undefined;

  constructor(cause: Cause) {
    super(cause.message ? `${cause.code}: ${cause.message}` : cause.code, { cause });
  }

  /** True for this class's errors from any copy of ctxflow, not only this one. */
  static override [Symbol.hasInstance](value: unknown): boolean {
    if (typeof value !== 'object' || value === null) return false;
    const kind = (value as Branded)[BRAND];
    if (typeof kind !== 'string') return false;
    // biome-ignore lint/complexity/noThisInStatic: `this` is the class `instanceof` was called on, a subclass included
    return this.kind === undefined || this.kind === kind;
  }
}

/** The context's deadline passed. */
export class DeadlineExceededError extends ContextDoneError {
  override readonly name = 'DeadlineExceededError';
  protected static override readonly kind: Kind = 'deadline_exceeded';
}

/** The context was cancelled for any reason other than its deadline. */
export class CancelledError extends ContextDoneError {
  override readonly name = 'CancelledError';
  protected static override readonly kind: Kind = 'cancelled';
}

Object.defineProperty(DeadlineExceededError.prototype, BRAND, { value: 'deadline_exceeded' });
Object.defineProperty(CancelledError.prototype, BRAND, { value: 'cancelled' });

/** True when `value` is a context's error (`DeadlineExceededError` or `CancelledError`), from any copy of ctxflow. */
export function isContextDoneError(value: unknown): value is ContextDoneError {
  return value instanceof ContextDoneError;
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
