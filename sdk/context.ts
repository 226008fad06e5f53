import { diag, context as otel, trace } from '@opentelemetry/api';
import { type Cause, type CauseInput, toCause } from './cause.ts';
import { type Entry, schedule, unschedule } from './deadline-queue.ts';
import { type ContextDoneError, errorFor } from './errors.ts';
import { activeContext, runWith } from './scope.ts';

/**
 * A request's deadline and cancellation, in the manner of Go's context.Context.
 * Contexts form a tree: a child never outlives its parent's deadline, and a parent's
 * end ends every descendant with the parent's cause. The first cause wins.
 */
export interface Context {
  /** The absolute deadline in epoch milliseconds, or undefined when there is none. */
  readonly deadline: number | undefined;
  /** The W3C trace id of the request this context belongs to, when known. */
  readonly traceId: string | undefined;
  /** True once the context is cancelled or past its deadline. */
  readonly done: boolean;
  /** Why the context ended, or undefined while it is live. */
  readonly cause: Cause | undefined;
  /** The typed error describing the end (its `cause` is `cause`), or undefined while live. */
  readonly error: ContextDoneError | undefined;
  /** An AbortSignal that aborts with `error` when the context ends, for fetch, timers, fs and gRPC. */
  readonly signal: AbortSignal;
  /** Milliseconds left before the deadline (0 once past it), or Infinity when there is none. */
  remaining(): number;
  /** Throws `error` when the context is done. */
  throwIfDone(): void;
  /**
   * Calls `fn` once when the context ends (at once if it already has), like Go's AfterFunc.
   * Returns a function that unregisters it.
   */
  onDone(fn: (error: ContextDoneError) => void): () => void;
  /** Runs `fn` with this context as `current()`, through every await and callback it starts. */
  run<T>(fn: () => T): T;
}

/**
 * A context its creator can end. Call `cancel()` when the work it covers is over, or declare it
 * with `using` (disposing it cancels it): either frees its timer and its link to the parent.
 */
export interface CancelableContext extends Context, Disposable {
  /**
   * Ends the context and its descendants with `cause` (default `cancelled`) and frees its timer and
   * its link to the parent; later calls do nothing.
   */
  cancel(cause?: CauseInput): void;
}

const CANCELLED: Cause = Object.freeze({ code: 'cancelled' });
const DEADLINE_EXCEEDED: Cause = Object.freeze({ code: 'deadline_exceeded' });
// Like Go's context.Canceled and DeadlineExceeded: the plain causes share one error each.
const CANCELLED_ERROR = errorFor(CANCELLED);
const DEADLINE_EXCEEDED_ERROR = errorFor(DEADLINE_EXCEEDED);

type Callback = (error: ContextDoneError) => void;

/** How and when a context ended. */
interface End {
  readonly cause: Cause;
  /** Epoch ms: a descendant past its own deadline takes this cause only if it came first. */
  readonly at: number;
  // Made on first use: most ends are never inspected.
  error: ContextDoneError | undefined;
}

/**
 * What a context keeps once it is observed (signal, onDone, or an observed child): its place in the
 * deadline queue, its observed children, its callbacks and its AbortController. Kept apart and made
 * only then, so that the common context, derived, read and released unobserved, is small.
 */
class Watch {
  // False while the watch only holds the signal of a context found done, or is about to be observed.
  observed = false;
  timer: Entry | undefined = undefined;
  controller: AbortController | undefined = undefined;
  // One callback inline (the common case: the adapter's), an array from the second on (a server's
  // and its outbound call's: an array of two is a tenth of a Set's size).
  callbacks: Callback | Callback[] | undefined = undefined;
  children: Set<Node> | undefined = undefined;
}

/**
 * The one implementation of Context. It allocates no timer, no AbortController and no
 * link to its parent until someone observes it (signal, onDone, or an observed child):
 * until then its state is computed on demand from the clock and its parent.
 */
class Node implements CancelableContext {
  readonly parent: Node | undefined;
  readonly deadline: number | undefined;
  readonly #traceId: string | undefined;
  #end: End | undefined;
  #watch: Watch | undefined;

  constructor(parent: Node | undefined, deadline: number | undefined, traceId: string | undefined) {
    this.parent = parent;
    this.deadline = deadline;
    this.#traceId = traceId;
  }

  get traceId(): string | undefined {
    return this.#traceId ?? this.parent?.traceId;
  }

  get done(): boolean {
    return this.#settle() !== undefined;
  }

  get cause(): Cause | undefined {
    return this.#settle()?.cause;
  }

  get error(): ContextDoneError | undefined {
    const end = this.#settle();
    if (end === undefined) return undefined;
    const cause = end.cause;
    end.error ??=
      cause === CANCELLED
        ? CANCELLED_ERROR
        : cause === DEADLINE_EXCEEDED
          ? DEADLINE_EXCEEDED_ERROR
          : errorFor(cause);
    return end.error;
  }

  get signal(): AbortSignal {
    const watch = this.#watched();
    if (watch.controller === undefined) {
      watch.controller = new AbortController();
      if (this.#settle() !== undefined) watch.controller.abort(this.error);
      else this.#observe(watch);
    }
    return watch.controller.signal;
  }

  remaining(): number {
    return this.deadline === undefined ? Number.POSITIVE_INFINITY : Math.max(0, this.deadline - Date.now());
  }

  throwIfDone(): void {
    if (this.#settle() !== undefined) throw this.error;
  }

  onDone(fn: (error: ContextDoneError) => void): () => void {
    // A root never ends: nothing to register, nothing to keep.
    if (this.parent === undefined) return noop;
    if (this.#settle() !== undefined) {
      invoke(fn, this.error as ContextDoneError);
      return noop;
    }
    const watch = this.#watched();
    const callbacks = watch.callbacks;
    if (callbacks === undefined) watch.callbacks = fn;
    else if (Array.isArray(callbacks)) {
      if (!callbacks.includes(fn)) callbacks.push(fn);
    } else if (callbacks !== fn) watch.callbacks = [callbacks, fn];
    this.#observe(watch);
    return () => {
      if (this.#removeCallback(fn)) this.#unobserveIfIdle();
    };
  }

  run<T>(fn: () => T): T {
    return runWith(this, fn);
  }

  #removeCallback(fn: Callback): boolean {
    const watch = this.#watch;
    if (watch === undefined) return false;
    const callbacks = watch.callbacks;
    if (callbacks === fn) {
      watch.callbacks = undefined;
      return true;
    }
    if (!Array.isArray(callbacks)) return false;
    const at = callbacks.indexOf(fn);
    if (at < 0) return false;
    callbacks.splice(at, 1);
    return true;
  }

  /** `now`, when given, is the instant the cancel is judged at (see cancelAt). */
  cancel(cause?: CauseInput, now?: number): void {
    // Roots (background, withoutCancel) never end; they are not handed out as cancelable anyway.
    if (this.parent === undefined || this.#end !== undefined) return;
    // One reading of the clock serves the check and the time of the end.
    now ??= Date.now();
    if (this.#settle(now) !== undefined) return;
    this.#finish(cause === undefined ? CANCELLED : toCause(cause), now);
  }

  [Symbol.dispose](): void {
    this.cancel();
  }

  timerFired(): void {
    // Only an observed context is in the deadline queue, and its watch stays until it leaves it.
    const watch = this.#watch as Watch;
    watch.timer = undefined;
    if (this.#settle() === undefined) this.#armTimer(watch);
  }

  /**
   * Brings the state up to date and returns the end when done. An observed context is
   * told of its parent's end, so it only checks its own deadline (a timer may run late).
   * `now`, when given, is the clock already read: ancestors are judged at the same instant.
   */
  #settle(now?: number): End | undefined {
    if (this.#end !== undefined) return this.#end;
    const deadline = this.deadline;
    // The clock (a native call) is read once for the whole line of ancestors, and only when there
    // is a deadline: without one here there is none above either (a child's is never later).
    const at = deadline === undefined ? undefined : (now ?? Date.now());
    const parent = this.parent;
    const parentEnd = parent === undefined || this.#watch?.observed === true ? undefined : parent.#settle(at);
    if (deadline !== undefined && at !== undefined && at >= deadline) {
      if (parentEnd !== undefined && parentEnd.at <= deadline) this.#finish(parentEnd.cause, parentEnd.at);
      else this.#finish(DEADLINE_EXCEEDED, deadline);
    } else if (parentEnd !== undefined) {
      this.#finish(parentEnd.cause, parentEnd.at);
    }
    return this.#end;
  }

  #watched(): Watch {
    this.#watch ??= new Watch();
    return this.#watch;
  }

  /**
   * Starts the machinery that ends the context on time: its timer and its link to the parent.
   * Called on a context #settle has just found live: unobserved, it found its ancestors live at
   * the same reading of the clock, so they need no second look (a deadline passing since is
   * caught by the timers armed here).
   */
  #observe(watch: Watch): void {
    if (watch.observed) return;
    watch.observed = true;
    this.#armTimer(watch);
    const parent = this.parent;
    // A root never ends, so a child of one has nothing to listen to.
    if (parent?.parent !== undefined) {
      const parentWatch = parent.#watched();
      parentWatch.children ??= new Set();
      parentWatch.children.add(this);
      parent.#observe(parentWatch);
    }
  }

  /** Undoes #observe when nothing watches this context any more, so an idle parent keeps no timer. */
  #unobserveIfIdle(): void {
    const watch = this.#watch;
    if (watch === undefined || !watch.observed || watch.controller !== undefined) return;
    const callbacks = watch.callbacks;
    if (callbacks !== undefined && (!Array.isArray(callbacks) || callbacks.length > 0)) return;
    if ((watch.children?.size ?? 0) > 0) return;
    this.#watch = undefined;
    if (watch.timer !== undefined) unschedule(watch.timer);
    this.#unlink();
  }

  #armTimer(watch: Watch): void {
    const deadline = this.deadline;
    // A parent with the same deadline has a timer of its own that will end this context too.
    if (deadline === undefined || deadline === this.parent?.deadline) return;
    watch.timer = schedule(this, deadline);
  }

  #unlink(): void {
    const parent = this.parent;
    if (parent === undefined) return;
    if (parent.#watch?.children?.delete(this)) parent.#unobserveIfIdle();
  }

  #finish(cause: Cause, at: number): void {
    if (this.#end !== undefined) return;
    this.#end = { cause, at, error: undefined };
    const watch = this.#watch;
    // With no watch it has no timer, no link to its parent and no one to tell.
    if (watch === undefined) return;
    if (watch.timer !== undefined) {
      unschedule(watch.timer);
      watch.timer = undefined;
    }
    this.#unlink();
    const { children, callbacks, controller } = watch;
    watch.children = undefined;
    watch.callbacks = undefined;
    if (children !== undefined) for (const child of children) child.#finish(cause, at);
    if (controller !== undefined) controller.abort(this.error);
    if (Array.isArray(callbacks)) for (const fn of callbacks) invoke(fn, this.error as ContextDoneError);
    else if (callbacks !== undefined) invoke(callbacks, this.error as ContextDoneError);
  }
}

function noop(): void {}

function invoke(fn: (error: ContextDoneError) => void, error: ContextDoneError): void {
  try {
    fn(error);
  } catch (thrown) {
    // One faulty callback must neither stop the others nor throw into whoever cancelled.
    diag.error('ctxflow: onDone callback threw', thrown);
  }
}

const BACKGROUND = new Node(undefined, undefined, undefined);

/** The root context: no deadline, never cancelled. `current()` returns it outside any `run`. */
export function background(): Context {
  return BACKGROUND;
}

/**
 * Creates a child of `parent` ending at `deadline` (epoch ms; the parent's when earlier).
 * `traceId` overrides the inherited one, for contexts that start a request; a context derived
 * from `background()` otherwise takes the trace id of the active OpenTelemetry span, if any.
 */
export function newContext(parent: Context, deadline?: number, traceId?: string): CancelableContext {
  if (!(parent instanceof Node)) return foreignChild(parent, deadline, traceId);
  const node = parent;
  const parentDeadline = node.deadline;
  let effective = deadline;
  if (effective === undefined || (parentDeadline !== undefined && parentDeadline < effective)) {
    effective = parentDeadline;
  }
  return new Node(node, effective, traceId ?? (node === BACKGROUND ? activeTraceId() : undefined));
}

/**
 * Cancels `ctx` as of `at` (epoch ms, not later than now): a deadline that had not passed by then
 * loses to `cause`. For a decision judged at one instant, such as shedding a request on arrival.
 * @internal For ctxflow's adapters.
 */
export function cancelAt(ctx: CancelableContext, cause: CauseInput, at: number): void {
  if (ctx instanceof Node) ctx.cancel(cause, at);
  else ctx.cancel(cause);
}

/** A child of `parent` that ends when cancelled or when the parent ends. */
export function withCancel(parent: Context): CancelableContext {
  return newContext(parent);
}

/** A child of `parent` that ends at `deadline` (epoch ms), or earlier if the parent does. */
export function withDeadline(parent: Context, deadline: number | Date): CancelableContext {
  const at = typeof deadline === 'number' ? deadline : deadline.getTime();
  if (Number.isNaN(at))
    throw new RangeError('ctxflow: withDeadline needs a valid date or epoch milliseconds');
  return newContext(parent, at);
}

/** A child of `parent` that ends `ms` milliseconds from now, or earlier if the parent does. */
export function withTimeout(parent: Context, ms: number): CancelableContext {
  if (Number.isNaN(ms)) throw new RangeError('ctxflow: withTimeout needs a number of milliseconds');
  return newContext(parent, Date.now() + ms);
}

/**
 * A context with the parent's trace but neither its deadline nor its cancellation,
 * for work that must outlive the request (audit logs, cache fills).
 */
export function withoutCancel(parent: Context): Context {
  return new Node(undefined, undefined, parent.traceId);
}

/** The context bound to the current async flow, or `background()` outside any `run`. */
export function current(): Context {
  return activeContext() ?? BACKGROUND;
}

/** Runs `fn` with `ctx` as `current()`, through every await and callback it starts. */
export function run<T>(ctx: Context, fn: () => T): T {
  return runWith(ctx, fn);
}

function activeTraceId(): string | undefined {
  return trace.getSpanContext(otel.active())?.traceId;
}

/**
 * A child of a context made by another copy of ctxflow in the process: a context of ours that the
 * parent's end cancels with the parent's cause, linked through the parent's `onDone` as Go links a
 * foreign parent through AfterFunc, and unlinked when the child ends first.
 */
function foreignChild(parent: Context, deadline?: number, traceId?: string): CancelableContext {
  let effective = deadline;
  const parentDeadline = parent.deadline;
  if (effective === undefined || (parentDeadline !== undefined && parentDeadline < effective)) {
    effective = parentDeadline;
  }
  const child = new Node(BACKGROUND, effective, traceId ?? parent.traceId);
  const unlink = parent.onDone((error) => child.cancel(error.cause));
  child.onDone(unlink);
  return child;
}
