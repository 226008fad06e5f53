import { type Context, current } from '../context.ts';
import { recordBulkheadWait } from '../metrics.ts';
import { BulkheadFullError } from './errors.ts';
import type { Policy } from './policy.ts';

/** How many calls a bulkhead runs at once and how many may wait. */
export interface BulkheadOptions {
  /** Named in BulkheadFullError's cause message. Default `bulkhead`. */
  name?: string;
  /** Calls running at once. */
  limit: number;
  /** Calls waiting for a slot; more are refused. Default 0. */
  queue?: number;
}

interface Waiter {
  start(): void;
}

/**
 * A concurrency limiter with a bounded queue. Waiting counts against the caller's deadline: a
 * queued call whose context ends (deadline or cancellation) leaves the queue at once and rejects
 * with the context's error; a call finding the queue full is refused with a BulkheadFullError.
 */
export class Bulkhead implements Policy {
  readonly #name: string;
  readonly #limit: number;
  readonly #queueLimit: number;
  // A Set keeps arrival order and lets a waiter whose context ended leave from the middle.
  readonly #queue = new Set<Waiter>();
  #active = 0;

  constructor(options: BulkheadOptions) {
    this.#name = options.name ?? 'bulkhead';
    this.#limit = options.limit;
    this.#queueLimit = options.queue ?? 0;
    if (!(this.#limit >= 1) || !(this.#queueLimit >= 0)) {
      throw new RangeError('ctxflow: a bulkhead needs limit >= 1 and queue >= 0');
    }
  }

  /** Calls running now. */
  get active(): number {
    return this.#active;
  }

  /** Calls waiting for a slot now. */
  get queued(): number {
    return this.#queue.size;
  }

  async execute<T>(fn: (ctx: Context) => T | PromiseLike<T>): Promise<T> {
    const caller = current();
    caller.throwIfDone();
    if (this.#active >= this.#limit) await this.#wait(caller);
    else this.#active++;
    try {
      return await fn(caller);
    } finally {
      this.#release();
    }
  }

  /** Waits in the queue; resolves holding a slot, handed over by the call that freed it. */
  #wait(caller: Context): Promise<void> {
    if (this.#queue.size >= this.#queueLimit) return Promise.reject(new BulkheadFullError(this.#name));
    const queuedAt = performance.now();
    return new Promise<void>((resolve, reject) => {
      const waiter: Waiter = {
        start: () => {
          stop();
          recordBulkheadWait(this.#name, performance.now() - queuedAt, 'admitted');
          resolve();
        },
      };
      this.#queue.add(waiter);
      const stop = caller.onDone((error) => {
        this.#queue.delete(waiter);
        recordBulkheadWait(this.#name, performance.now() - queuedAt, 'left');
        reject(error);
      });
    });
  }

  #release(): void {
    const next = this.#queue.values().next();
    if (next.done) {
      this.#active--;
      return;
    }
    this.#queue.delete(next.value);
    next.value.start();
  }
}

/** A bulkhead policy; see `Bulkhead`. */
export function bulkhead(options: BulkheadOptions): Bulkhead {
  return new Bulkhead(options);
}
