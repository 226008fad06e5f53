import type { Clock } from './policy.ts';

const SLOTS = 10;

/**
 * Two counts over a sliding time window, kept in ten slots so old events expire in steps of a
 * tenth of the window without remembering each event.
 */
export class SlidingCounts {
  readonly #slotMs: number;
  readonly #now: Clock;
  readonly #a = new Float64Array(SLOTS);
  readonly #b = new Float64Array(SLOTS);
  #slot = 0;
  #slotStart: number;

  constructor(windowMs: number, now: Clock) {
    this.#slotMs = windowMs / SLOTS;
    this.#now = now;
    this.#slotStart = now();
  }

  /** Adds `n` to the first count. */
  addA(n = 1): void {
    this.#advance();
    this.#a[this.#slot] = (this.#a[this.#slot] as number) + n;
  }

  /** Adds `n` to the second count. */
  addB(n = 1): void {
    this.#advance();
    this.#b[this.#slot] = (this.#b[this.#slot] as number) + n;
  }

  /** The first count over the window. */
  a(): number {
    this.#advance();
    return sum(this.#a);
  }

  /** The second count over the window. */
  b(): number {
    this.#advance();
    return sum(this.#b);
  }

  /** Forgets everything counted. */
  reset(): void {
    this.#a.fill(0);
    this.#b.fill(0);
  }

  /** Moves the ring forward to the slot of the current time, clearing the slots that expired. */
  #advance(): void {
    const elapsed = Math.floor((this.#now() - this.#slotStart) / this.#slotMs);
    if (elapsed <= 0) return;
    for (let i = Math.min(elapsed, SLOTS); i > 0; i--) {
      this.#slot = (this.#slot + 1) % SLOTS;
      this.#a[this.#slot] = 0;
      this.#b[this.#slot] = 0;
    }
    this.#slotStart += elapsed * this.#slotMs;
  }
}

function sum(counts: Float64Array): number {
  let total = 0;
  for (let i = 0; i < SLOTS; i++) total += counts[i] as number;
  return total;
}
