import type { CauseCode } from './cause.ts';

/**
 * The HTTP status that reports a context ended with `code`: 504 for its deadline, 503 for a
 * shutdown, 500 for an error, and 499 (nginx's "client closed request") for every cancellation.
 */
export function httpStatusFor(code: CauseCode): number {
  switch (code) {
    case 'deadline_exceeded':
      return 504;
    case 'shutdown':
      return 503;
    case 'error':
      return 500;
    default:
      return 499;
  }
}

/**
 * The cause an HTTP status reports when it comes with a `ctx-cancel-reason` the receiver cannot
 * decode, or undefined for a status that never reports a context's end (then the header is not read).
 */
export function httpFallbackCause(status: number): CauseCode | undefined {
  switch (status) {
    case 504:
      return 'deadline_exceeded';
    case 503:
    case 499:
      return 'cancelled';
    default:
      return undefined;
  }
}
