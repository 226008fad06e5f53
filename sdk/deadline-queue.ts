/**
 * One Node.js timer for the deadlines of every observed context in the process. A timer per
 * context costs a Timeout, its list in Node's timer queue and, in a process with no other timer,
 * native calls to arm, ref and unref one per request; here a deadline is an entry in a list per
 * millisecond, and a single unref'd timer is armed for the earliest one. The timer is left armed
 * when its entry goes (a request answered in time): re-arming at each request of a quiet server
 * would cost what a timer per context does. When it fires it re-arms for the earliest entry left,
 * or stops when there is none.
 */

/** What the queue calls when its deadline has come (a context, which checks its own clock). */
export interface DueTarget {
  timerFired(): void;
}

/** A target's place in the queue, from `schedule` until it fires or is `unschedule`d. */
export class Entry {
  readonly at: number;
  readonly target: DueTarget;
  prev: Entry | undefined;
  next: Entry | undefined;
  live = true;

  constructor(at: number, target: DueTarget) {
    this.at = at;
    this.target = target;
  }
}

// setTimeout holds at most a signed 32-bit delay; the timer re-arms for what is left on waking.
const MAX_TIMER_DELAY = 2 ** 31 - 1;

/**
 * The head of each millisecond's list; null once emptied, kept until its time comes so that the
 * millisecond is in the heap once.
 */
const lists = new Map<number, Entry | null>();
/** A min-heap of the milliseconds in `lists`. */
const heap: number[] = [];
let scheduled = 0;
let timer: NodeJS.Timeout | undefined;
let armedAt = Number.POSITIVE_INFINITY;

/** Calls `target.timerFired()` at `at` (epoch ms) or soon after, unless unscheduled first. */
export function schedule(target: DueTarget, at: number): Entry {
  const entry = new Entry(at, target);
  scheduled++;
  const head = lists.get(at);
  if (head === undefined) {
    lists.set(at, entry);
    push(at);
  } else if (head === null) {
    lists.set(at, entry);
  } else {
    entry.prev = head;
    entry.next = head.next;
    if (head.next !== undefined) head.next.prev = entry;
    head.next = entry;
  }
  if (at < armedAt) arm(at);
  return entry;
}

/** Takes an entry out of the queue; nothing when it has fired already. */
export function unschedule(entry: Entry): void {
  if (!entry.live) return;
  entry.live = false;
  scheduled--;
  const { prev, next } = entry;
  if (prev !== undefined) {
    prev.next = next;
    if (next !== undefined) next.prev = prev;
  } else if (next !== undefined) {
    next.prev = undefined;
    lists.set(entry.at, next);
  } else {
    lists.set(entry.at, null);
  }
  entry.prev = undefined;
  entry.next = undefined;
}

function arm(at: number): void {
  if (timer !== undefined) clearTimeout(timer);
  timer = setTimeout(onTimer, Math.min(Math.max(0, at - Date.now()), MAX_TIMER_DELAY));
  timer.unref();
  armedAt = at;
}

function onTimer(): void {
  timer = undefined;
  armedAt = Number.POSITIVE_INFINITY;
  const now = Date.now();
  while (heap.length > 0 && (heap[0] as number) <= now) {
    const at = pop();
    let entry = lists.get(at);
    lists.delete(at);
    // Detached first: what a target runs when it fires may schedule or unschedule others.
    const due: DueTarget[] = [];
    while (entry !== undefined && entry !== null) {
      const next: Entry | undefined = entry.next;
      entry.live = false;
      scheduled--;
      entry.prev = undefined;
      entry.next = undefined;
      due.push(entry.target);
      entry = next;
    }
    for (const target of due) target.timerFired();
  }
  // Emptied lists before the first live one go now: the timer is armed for a live entry.
  while (heap.length > 0 && !lists.get(heap[0] as number)) lists.delete(pop());
  if (heap.length > 0) arm(heap[0] as number);
}

/** How many entries wait in the queue: for tests and diagnostics. */
export function scheduledCount(): number {
  return scheduled;
}

function push(value: number): void {
  let i = heap.length;
  heap.push(value);
  while (i > 0) {
    const parent = (i - 1) >> 1;
    if ((heap[parent] as number) <= value) break;
    heap[i] = heap[parent] as number;
    i = parent;
  }
  heap[i] = value;
}

function pop(): number {
  const top = heap[0] as number;
  const last = heap.pop() as number;
  if (heap.length > 0) {
    let i = 0;
    for (;;) {
      const left = 2 * i + 1;
      if (left >= heap.length) break;
      const right = left + 1;
      const child = right < heap.length && (heap[right] as number) < (heap[left] as number) ? right : left;
      if ((heap[child] as number) >= last) break;
      heap[i] = heap[child] as number;
      i = child;
    }
    heap[i] = last;
  }
  return top;
}
