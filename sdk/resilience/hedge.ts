import { type CancelableContext, type Context, current, withCancel } from '../context.ts';
import { RetryBudget } from './budget.ts';
import { LatencyWindow } from './latency.ts';
import { type Policy, runUnder } from './policy.ts';

/** When a hedge sends its second attempt. */
export interface HedgeOptions {
  /** The caller's declaration that the call may safely run twice: hedging is refused otherwise. */
  idempotent: true;
  /** Sends the second attempt after this long. Default: the `percentile` of recent durations. */
  delayMs?: number;
  /** When learned: the percentile of recent successful durations to wait. Default 0.95. */
  percentile?: number;
  /** When learned: no hedging before this many durations are known. Default 20. */
  minSamples?: number;
  /** Hedged attempts are taken from this budget, shared with the dependency's retries. Default: one of its own. */
  budget?: RetryBudget;
}

/** Cause given to the attempt that lost the race. */
const HEDGE_LOST = { code: 'hedge_lost' } as const;

/**
 * Hedging for idempotent calls: when the first attempt has not answered after `delayMs` (or a
 * recent latency percentile), a second one starts, in its own child context, provided the retry
 * budget grants it and the caller has time left for a whole call (the median of recent ones).
 * The first success wins; the other attempt is cancelled with cause `hedge_lost`. A failure
 * waits for the attempt still running, if any; otherwise the call rejects with that failure.
 */
export class Hedge implements Policy {
  readonly budget: RetryBudget;
  readonly #fixed: number | undefined;
  readonly #percentile: number;
  readonly #minSamples: number;
  readonly #window = new LatencyWindow(100);

  constructor(options: HedgeOptions) {
    if (options?.idempotent !== true) {
      throw new TypeError('ctxflow: hedge only calls declared idempotent ({ idempotent: true })');
    }
    this.budget = options.budget ?? new RetryBudget();
    this.#fixed = options.delayMs;
    this.#percentile = options.percentile ?? 0.95;
    this.#minSamples = options.minSamples ?? 20;
  }

  /** How long the next call waits before hedging, in milliseconds; undefined when it will not hedge. */
  delayMs(): number | undefined {
    if (this.#fixed !== undefined) return this.#fixed;
    return this.#window.count < this.#minSamples ? undefined : this.#window.percentile(this.#percentile);
  }

  execute<T>(fn: (ctx: Context) => T | PromiseLike<T>): Promise<T> {
    const caller = current();
    if (caller.done) return Promise.reject(caller.error);
    this.budget.recordRequest();
    const delay = this.delayMs();
    const started = performance.now();
    return new Promise<T>((resolve, reject) => {
      const attempts: CancelableContext[] = [];
      let pending = 0;
      let settled = false;
      let timer: NodeJS.Timeout | undefined;
      const finish = () => {
        settled = true;
        if (timer !== undefined) clearTimeout(timer);
        stopWatching();
      };
      const launch = () => {
        const ctx = withCancel(caller);
        attempts.push(ctx);
        pending++;
        runUnder(ctx, fn).then(
          (value) => {
            pending--;
            if (settled) return;
            finish();
            this.#window.record(performance.now() - started);
            for (const other of attempts) if (other !== ctx) other.cancel(HEDGE_LOST);
            ctx.cancel();
            resolve(value);
          },
          (error: unknown) => {
            pending--;
            ctx.cancel();
            if (settled) return;
            // The caller's end, or nothing else left to wait for, ends the call.
            if (caller.done) {
              finish();
              reject(caller.error);
            } else if (pending === 0) {
              finish();
              reject(error);
            }
          },
        );
      };
      const stopWatching = caller.onDone((error) => {
        if (settled) return;
        finish();
        reject(error);
      });
      launch();
      if (delay === undefined || settled) return;
      timer = setTimeout(() => {
        timer = undefined;
        if (settled) return;
        const whole = this.#window.count > 0 ? this.#window.percentile(0.5) : delay;
        if (caller.remaining() >= whole && this.budget.tryRetry()) launch();
      }, delay);
    });
  }
}

/** A hedging policy; see `Hedge`. */
export function hedge(options: HedgeOptions): Hedge {
  return new Hedge(options);
}
