import type { Clock } from './policy.ts';
import { SlidingCounts } from './window.ts';

/** How much retrying one dependency may add to its load. */
export interface RetryBudgetOptions {
  /** Retries allowed as a fraction of the requests made in the window. Default 0.2. */
  percent?: number;
  /** Retries allowed per second of the window whatever the traffic, so rare callers can retry. Default 10. */
  minPerSecond?: number;
  /** How far back requests and retries are remembered, in milliseconds. Default 10 000. */
  windowMs?: number;
  /** Default `Date.now`. */
  now?: Clock;
}

/**
 * A retry budget for one dependency, as Finagle's: over the last `windowMs`, retries (and hedged
 * attempts) may be at most `percent` of the requests plus `minPerSecond` per second of the window,
 * so retries cannot multiply the load on a dependency that is down. Share one per dependency.
 */
export class RetryBudget {
  readonly #percent: number;
  readonly #floor: number;
  // a: first attempts, b: retries.
  readonly #counts: SlidingCounts;

  constructor(options: RetryBudgetOptions = {}) {
    const percent = options.percent ?? 0.2;
    const minPerSecond = options.minPerSecond ?? 10;
    const windowMs = options.windowMs ?? 10_000;
    if (!(percent >= 0) || !(minPerSecond >= 0) || !(windowMs > 0)) {
      throw new RangeError('ctxflow: a retry budget needs percent >= 0, minPerSecond >= 0, windowMs > 0');
    }
    this.#percent = percent;
    this.#floor = (minPerSecond * windowMs) / 1000;
    this.#counts = new SlidingCounts(windowMs, options.now ?? Date.now);
  }

  /** Records a first attempt: each one earns `percent` of a retry. */
  recordRequest(): void {
    this.#counts.addA();
  }

  /** Takes one retry from the budget; false (and nothing taken) when the budget is spent. */
  tryRetry(): boolean {
    if (this.balance() < 1) return false;
    this.#counts.addB();
    return true;
  }

  /** How many retries the budget allows right now. */
  balance(): number {
    return this.#floor + this.#counts.a() * this.#percent - this.#counts.b();
  }
}
