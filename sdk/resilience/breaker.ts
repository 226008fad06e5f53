import { type Context, current } from '../context.ts';
import { countBreakerTransition } from '../metrics.ts';
import { CircuitOpenError, ResilienceError } from './errors.ts';
import type { Clock, Policy } from './policy.ts';
import { SlidingCounts } from './window.ts';

/** When a breaker opens, for how long, and how it tries the dependency again. */
export interface BreakerOptions {
  /** Named in CircuitOpenError's cause message. Default `breaker`. */
  name?: string;
  /** Opens when at least this fraction of the calls in the window failed. Default 0.5. */
  failureRatio?: number;
  /** ... and at least this many calls ended in the window. Default 10. */
  minimumVolume?: number;
  /** The window over which calls are counted, in milliseconds. Default 10 000. */
  windowMs?: number;
  /** How long it stays open before letting probes through, in milliseconds. Default 5 000. */
  openMs?: number;
  /** Probes let through at once when half-open; that many successes close it. Default 1. */
  halfOpenProbes?: number;
  /** Whether an error counts against the dependency; the caller's own end never does. Default: any error but a policy's refusal. */
  isFailure?: (error: unknown) => boolean;
  /** Default `Date.now`. */
  now?: Clock;
}

/** Where a breaker stands. */
export type BreakerState = 'closed' | 'open' | 'half-open';

function countsAgainstDependency(error: unknown): boolean {
  return !(error instanceof ResilienceError);
}

/**
 * A circuit breaker for one dependency. Closed, it counts outcomes over a sliding window and opens
 * when the failure ratio and the minimum volume are both reached; open, it fails fast with a
 * CircuitOpenError for `openMs`; then half-open, it lets `halfOpenProbes` calls through, closing
 * after that many successes and opening again at the first failure. A call that failed because the
 * caller's own deadline passed or the caller cancelled says nothing about the dependency: not counted.
 */
export class Breaker implements Policy {
  readonly #name: string;
  readonly #failureRatio: number;
  readonly #minimumVolume: number;
  readonly #openMs: number;
  readonly #probes: number;
  readonly #isFailure: (error: unknown) => boolean;
  readonly #now: Clock;
  // a: successes, b: failures.
  readonly #counts: SlidingCounts;
  #state: BreakerState = 'closed';
  #openedAt = 0;
  #probesRunning = 0;
  #probeSuccesses = 0;
  // Bumped at each half-open period, so a probe from an earlier one decides nothing.
  #period = 0;

  constructor(options: BreakerOptions = {}) {
    this.#name = options.name ?? 'breaker';
    this.#failureRatio = options.failureRatio ?? 0.5;
    this.#minimumVolume = options.minimumVolume ?? 10;
    this.#openMs = options.openMs ?? 5_000;
    this.#probes = options.halfOpenProbes ?? 1;
    this.#isFailure = options.isFailure ?? countsAgainstDependency;
    this.#now = options.now ?? Date.now;
    this.#counts = new SlidingCounts(options.windowMs ?? 10_000, this.#now);
    if (!(this.#failureRatio > 0 && this.#failureRatio <= 1) || !(this.#probes >= 1)) {
      throw new RangeError('ctxflow: a breaker needs 0 < failureRatio <= 1 and halfOpenProbes >= 1');
    }
  }

  /** The current state; an open breaker whose open time is over reads as half-open. */
  get state(): BreakerState {
    if (this.#state === 'open' && this.#now() - this.#openedAt >= this.#openMs) {
      this.#state = 'half-open';
      countBreakerTransition(this.#name, 'half-open');
      this.#period++;
      this.#probesRunning = 0;
      this.#probeSuccesses = 0;
    }
    return this.#state;
  }

  async execute<T>(fn: (ctx: Context) => T | PromiseLike<T>): Promise<T> {
    const caller = current();
    caller.throwIfDone();
    const state = this.state;
    if (state === 'open') {
      throw new CircuitOpenError(this.#name, this.#openMs - (this.#now() - this.#openedAt));
    }
    const period = state === 'half-open' ? this.#period : -1;
    if (period >= 0) {
      if (this.#probesRunning >= this.#probes) throw new CircuitOpenError(this.#name, 0);
      this.#probesRunning++;
    }
    let result: T;
    try {
      result = await fn(caller);
    } catch (error) {
      const probe = this.#endProbe(period);
      // Once the caller's context has ended, the failure is the caller's, not the dependency's.
      if (!caller.done && this.#isFailure(error)) this.#failure(probe, period >= 0);
      throw error;
    }
    this.#success(this.#endProbe(period), period >= 0);
    return result;
  }

  /** Frees a probe's place; true when it belongs to the half-open period still running. */
  #endProbe(period: number): boolean {
    if (period < 0 || period !== this.#period || this.#state !== 'half-open') return false;
    this.#probesRunning--;
    return true;
  }

  #success(probe: boolean, wasProbe: boolean): void {
    if (wasProbe) {
      if (probe && ++this.#probeSuccesses >= this.#probes) {
        this.#state = 'closed';
        this.#counts.reset();
        countBreakerTransition(this.#name, 'closed');
      }
    } else if (this.#state === 'closed') {
      this.#counts.addA();
    }
  }

  #failure(probe: boolean, wasProbe: boolean): void {
    if (wasProbe) {
      if (probe) this.#open();
      return;
    }
    if (this.#state !== 'closed') return;
    this.#counts.addB();
    const failures = this.#counts.b();
    const total = failures + this.#counts.a();
    if (total >= this.#minimumVolume && failures >= this.#failureRatio * total) this.#open();
  }

  #open(): void {
    this.#state = 'open';
    this.#openedAt = this.#now();
    countBreakerTransition(this.#name, 'open');
  }
}

/** A circuit breaker policy; see `Breaker`. */
export function breaker(options?: BreakerOptions): Breaker {
  return new Breaker(options);
}
