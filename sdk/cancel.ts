/**
 * The cancel channel: how the end of a request reaches work it started elsewhere, after the call
 * that carried it is over (a message in a queue, a job handed to another process). Transport-free:
 * a queue or bus adapter implements `CancelChannel`; `CancelRegistry` is the bounded memory of
 * ended request ids every implementation needs.
 */
import { diag } from '@opentelemetry/api';
import type { Cause } from './cause.ts';

/** Told of every cancel read: the request id, its cause, and when it was published (epoch ms). */
export type CancelListener = (requestId: string, cause: Cause, publishedAt: number) => void;

/**
 * Carries request ends between processes: a producer publishes the end of a request whose id it
 * sent with its work; every consumer instance hears it and cancels that request's running work,
 * and refuses its work still queued.
 */
export interface CancelChannel {
  /** Where ends are published (a topic, a queue, a subject): names the channel in metrics. */
  readonly topic: string;
  /** Publishes that the request sent as `requestId` ended with `cause`. */
  publish(requestId: string, cause: Cause): Promise<void>;
  /** Registers a listener for ends read from the channel; returns a function that removes it. */
  onCancel(listener: CancelListener): () => void;
  /** The cause `requestId` ended with, if its end was read and is still remembered. */
  cancelled(requestId: string): Cause | undefined;
  /** Starts reading; resolves once what was published before is read (or the implementation gives up waiting). */
  start(): Promise<void>;
}

/** How long and how many request ends a `CancelRegistry` remembers. */
export interface CancelRegistryOptions {
  /** How long an end is remembered after it was read, in ms: the longest deadline work can carry. */
  horizonMs: number;
  /** At most this many ends are remembered; the oldest go first. */
  maxEntries: number;
}

/**
 * The ends of requests read from a cancel channel, remembered for `horizonMs` and at most
 * `maxEntries` of them, so that an end for an id this instance never sees (most of them: the ids
 * of other instances' work, or invented by whoever writes the channel) costs bounded memory.
 */
export class CancelRegistry {
  readonly #horizonMs: number;
  readonly #maxEntries: number;
  // Insertion-ordered, so the oldest entry is the first: pruning stops at the first live one.
  readonly #ends = new Map<string, { cause: Cause; expires: number }>();
  readonly #listeners = new Set<CancelListener>();

  constructor(options: CancelRegistryOptions) {
    this.#horizonMs = options.horizonMs;
    this.#maxEntries = Math.max(1, options.maxEntries);
  }

  /** How many ends are remembered now. */
  get size(): number {
    return this.#ends.size;
  }

  /** The cause `requestId` ended with, while remembered. */
  cancelled(requestId: string): Cause | undefined {
    const entry = this.#ends.get(requestId);
    if (entry === undefined) return undefined;
    if (entry.expires > Date.now()) return entry.cause;
    this.#ends.delete(requestId);
    return undefined;
  }

  /** Registers a listener; returns a function that removes it. */
  onCancel(listener: CancelListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Remembers an end (published at `publishedAt`), forgets what is past the bounds, and tells the listeners. */
  record(requestId: string, cause: Cause, publishedAt = Date.now()): void {
    const now = Date.now();
    this.#ends.delete(requestId);
    this.#ends.set(requestId, { cause, expires: now + this.#horizonMs });
    for (const [id, entry] of this.#ends) {
      if (entry.expires > now && this.#ends.size <= this.#maxEntries) break;
      this.#ends.delete(id);
    }
    for (const listener of this.#listeners) {
      try {
        listener(requestId, cause, publishedAt);
      } catch (error) {
        diag.error('ctxflow: cancel listener threw', error);
      }
    }
  }
}
