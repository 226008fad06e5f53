/**
 * The durations of the most recent calls (a ring of `size`), and percentiles over them: what a
 * hedge waits before its second attempt and what load shedding expects a call to cost.
 */
export class LatencyWindow {
  readonly #samples: Float64Array;
  #next = 0;
  #count = 0;
  #sorted: Float64Array | undefined;

  constructor(size = 100) {
    if (!(size >= 1)) throw new RangeError('ctxflow: a latency window needs size >= 1');
    this.#samples = new Float64Array(size);
  }

  /** How many durations are remembered. */
  get count(): number {
    return this.#count;
  }

  /** Remembers one duration in milliseconds, forgetting the oldest once full. */
  record(ms: number): void {
    this.#samples[this.#next] = ms;
    this.#next = (this.#next + 1) % this.#samples.length;
    if (this.#count < this.#samples.length) this.#count++;
    this.#sorted = undefined;
  }

  /** The `p` percentile (0 < p <= 1, nearest rank) of the remembered durations; 0 when there are none. */
  percentile(p: number): number {
    if (this.#count === 0) return 0;
    this.#sorted ??= this.#samples.slice(0, this.#count).sort();
    const rank = Math.min(this.#count, Math.max(1, Math.ceil(p * this.#count)));
    return this.#sorted[rank - 1] as number;
  }
}
