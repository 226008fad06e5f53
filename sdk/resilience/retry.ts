import { type CancelableContext, type Context, current, withCancel, withTimeout } from '../context.ts';
import { isContextDoneError } from '../errors.ts';
import { countRetry, type RetryDecision } from '../metrics.ts';
import { RetryBudget } from './budget.ts';
import { ResilienceError } from './errors.ts';
import { type Policy, type Random, runUnder, sleep } from './policy.ts';

/** How a retry policy decides whether, when and how often to try again. */
export interface RetryOptions {
  /** Names the policy in metrics (`ctxflow.policy`). Default `retry`. */
  name?: string;
  /** Attempts in all, the first included. Default 3. */
  maxAttempts?: number;
  /** The dependency's retry budget, shared by every policy calling it. Default: one of its own. */
  budget?: RetryBudget;
  /** Backoff before retry n is drawn uniformly from [0, min(maxDelayMs, baseMs * 2^(n-1))). Default 20. */
  baseMs?: number;
  /** Cap of the backoff. Default 1000. */
  maxDelayMs?: number;
  /** No attempt starts with less than this left before the caller's deadline. Default 5. */
  minRemainingMs?: number;
  /** Ends each attempt (retryably) after this long, within the caller's deadline. Default: none. */
  attemptTimeoutMs?: number;
  /** Whether an attempt's error is worth another try; the caller's own end never is. Default `isRetryable`. */
  retryOn?: (error: unknown, attempt: Context) => boolean;
  /** The jitter source. Default `Math.random`. */
  random?: Random;
}

/**
 * The default classification: an attempt that timed out on its own (`attemptTimeoutMs`) or was
 * refused by a callee that is shutting down is retryable, as is any error that is not a context's
 * end or a policy's refusal (network errors, errors the caller throws for a bad answer).
 */
export function isRetryable(error: unknown, attempt: Context): boolean {
  if (isContextDoneError(error)) return error === attempt.error || error.cause.code === 'shutdown';
  return !(error instanceof ResilienceError);
}

/**
 * Retries failed attempts with exponential backoff and full jitter, within the caller's deadline
 * and the dependency's retry budget. Each attempt runs in its own child context. Once the caller's
 * context has ended (deadline or cancellation), it stops at once, during an attempt or a backoff,
 * and rejects with the caller's error; otherwise it rejects with the last attempt's error.
 */
export class Retry implements Policy {
  readonly budget: RetryBudget;
  readonly #maxAttempts: number;
  readonly #baseMs: number;
  readonly #maxDelayMs: number;
  readonly #minRemainingMs: number;
  readonly #attemptTimeoutMs: number | undefined;
  readonly #retryOn: (error: unknown, attempt: Context) => boolean;
  readonly #random: Random;
  readonly #name: string;

  constructor(options: RetryOptions = {}) {
    this.#name = options.name ?? 'retry';
    this.budget = options.budget ?? new RetryBudget();
    this.#maxAttempts = options.maxAttempts ?? 3;
    this.#baseMs = options.baseMs ?? 20;
    this.#maxDelayMs = options.maxDelayMs ?? 1000;
    this.#minRemainingMs = options.minRemainingMs ?? 5;
    this.#attemptTimeoutMs = options.attemptTimeoutMs;
    this.#retryOn = options.retryOn ?? isRetryable;
    this.#random = options.random ?? Math.random;
    if (!(this.#maxAttempts >= 1)) throw new RangeError('ctxflow: retry needs maxAttempts >= 1');
  }

  async execute<T>(fn: (ctx: Context) => T | PromiseLike<T>): Promise<T> {
    const caller = current();
    caller.throwIfDone();
    this.budget.recordRequest();
    for (let attempt = 1; ; attempt++) {
      const ctx = this.#attemptContext(caller);
      let failure: unknown;
      let retryable: boolean;
      try {
        return await runUnder(ctx, fn);
      } catch (error) {
        failure = error;
        // Classified before the attempt is cancelled, while its own end (a timeout) is still telling.
        retryable = !caller.done && attempt < this.#maxAttempts && this.#retryOn(error, ctx);
      } finally {
        ctx.cancel();
      }
      if (caller.done) this.#give(caller.error, 'caller_ended');
      if (!retryable) this.#give(failure, attempt < this.#maxAttempts ? 'not_retryable' : 'attempts');
      const delay = this.#random() * Math.min(this.#maxDelayMs, this.#baseMs * 2 ** (attempt - 1));
      // Sleeping into the deadline only to refuse the attempt would waste the caller's time.
      if (caller.remaining() - delay < this.#minRemainingMs) this.#give(failure, 'deadline');
      if (!this.budget.tryRetry()) this.#give(failure, 'budget');
      countRetry(this.#name, 'retried');
      await sleep(caller, delay);
      // Timers run late on a busy loop: the deadline may have come before the backoff ended.
      if (caller.done) this.#give(caller.error, 'caller_ended');
      if (caller.remaining() < this.#minRemainingMs) this.#give(failure, 'deadline');
    }
  }

  /** Gives up: counts why, and throws `error`. */
  #give(error: unknown, decision: RetryDecision): never {
    countRetry(this.#name, decision);
    throw error;
  }

  #attemptContext(caller: Context): CancelableContext {
    return this.#attemptTimeoutMs === undefined
      ? withCancel(caller)
      : withTimeout(caller, this.#attemptTimeoutMs);
  }
}

/** A retry policy; see `Retry`. */
export function retry(options?: RetryOptions): Retry {
  return new Retry(options);
}
