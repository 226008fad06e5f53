import { type Context, current } from '../context.ts';
import { InsufficientBudgetError } from './errors.ts';
import { LatencyWindow } from './latency.ts';
import type { Policy } from './policy.ts';

/** What work is expected to cost: a fixed figure, or one learned from recent durations. */
export interface ShedOptions {
  /** Named in InsufficientBudgetError's cause message. Default `work`. */
  name?: string;
  /** The expected cost in milliseconds. Default: learned. */
  expectedMs?: number;
  /** When learned: the percentile of recent successful durations taken as the cost. Default 0.9. */
  percentile?: number;
  /** When learned: how many recent durations are kept. Default 100. */
  samples?: number;
  /** When learned: nothing is refused before this many durations are known. Default 10. */
  minSamples?: number;
}

/**
 * Load shedding: refuses, before starting it, work whose caller has less time left than the work
 * is expected to take (InsufficientBudgetError, code `insufficient_budget`), rather than start what
 * cannot finish in time. The expected cost is fixed or a moving percentile of recent successes.
 */
export class Shed implements Policy {
  readonly #name: string;
  readonly #fixed: number | undefined;
  readonly #percentile: number;
  readonly #minSamples: number;
  readonly #window: LatencyWindow | undefined;

  constructor(options: ShedOptions = {}) {
    this.#name = options.name ?? 'work';
    this.#fixed = options.expectedMs;
    this.#percentile = options.percentile ?? 0.9;
    this.#minSamples = options.minSamples ?? 10;
    this.#window = this.#fixed === undefined ? new LatencyWindow(options.samples ?? 100) : undefined;
  }

  /** What the next call is expected to take, in milliseconds (0 until enough is learned). */
  expectedMs(): number {
    if (this.#fixed !== undefined) return this.#fixed;
    const window = this.#window as LatencyWindow;
    return window.count < this.#minSamples ? 0 : window.percentile(this.#percentile);
  }

  async execute<T>(fn: (ctx: Context) => T | PromiseLike<T>): Promise<T> {
    const caller = current();
    caller.throwIfDone();
    const expected = this.expectedMs();
    const remaining = caller.remaining();
    if (remaining < expected) throw new InsufficientBudgetError(this.#name, remaining, expected);
    if (this.#window === undefined) return await fn(caller);
    const started = performance.now();
    const result = await fn(caller);
    this.#window.record(performance.now() - started);
    return result;
  }
}

/** A load-shedding policy; see `Shed`. */
export function shed(options?: ShedOptions): Shed {
  return new Shed(options);
}
