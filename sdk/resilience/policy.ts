import { type Context, current } from '../context.ts';

/**
 * One resilience policy: `execute(fn)` runs `fn` under `current()` (or a child of it the policy
 * derives, such as one per retry attempt) and passes it that context, whose `signal` aborts when
 * the attempt must stop. Policies compose with `wrap`.
 */
export interface Policy {
  execute<T>(fn: (ctx: Context) => T | PromiseLike<T>): Promise<T>;
}

/** The current time in epoch milliseconds; injectable so tests can drive time themselves. */
export type Clock = () => number;

/** A number in [0, 1); injectable so tests get the same jitter on every run. */
export type Random = () => number;

/**
 * Composes policies, the first outermost: `wrap(retry, breaker, bulkhead).execute(fn)` retries
 * calls that each go through the breaker, then the bulkhead. Each policy runs what it wraps under
 * the context it derived, so the innermost `fn` gets the attempt's context.
 */
export function wrap(...policies: Policy[]): Policy {
  return {
    async execute<T>(fn: (ctx: Context) => T | PromiseLike<T>): Promise<T> {
      let next = fn;
      for (let i = policies.length - 1; i >= 0; i--) {
        const policy = policies[i] as Policy;
        const inner = next;
        next = () => policy.execute(inner);
      }
      return await next(current());
    },
  };
}

/** Runs `fn(ctx)` under `ctx`, turning a synchronous throw into a rejection. */
export async function runUnder<T>(ctx: Context, fn: (ctx: Context) => T | PromiseLike<T>): Promise<T> {
  return await ctx.run(() => fn(ctx));
}

/**
 * Resolves after `ms`, or rejects with the context's error as soon as `ctx` ends; the timer is
 * cleared on cancellation and the listener removed when the wait ends.
 */
export function sleep(ctx: Context, ms: number): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let timer: NodeJS.Timeout | undefined;
    const stop = ctx.onDone((error) => {
      if (timer !== undefined) clearTimeout(timer);
      reject(error);
    });
    if (ctx.done) return;
    timer = setTimeout(() => {
      stop();
      resolve();
    }, ms);
  });
}
