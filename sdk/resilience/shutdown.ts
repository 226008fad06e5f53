import { diag } from '@opentelemetry/api';
import {
  background,
  type CancelableContext,
  type Context,
  current,
  withCancel,
  withTimeout,
} from '../context.ts';
import { ShuttingDownError } from './errors.ts';
import { type Policy, runUnder } from './policy.ts';

/** How a process shuts down. */
export interface ShutdownOptions {
  /** How long in-flight work may take to finish once shutdown begins, in milliseconds. Default 10 000. */
  grace?: number;
  /** After the grace, how long cancelled work gets to unwind before the drain hooks run. Default 1 000. */
  settleMs?: number;
  /** The deadline of the context the drain hooks run under, in milliseconds. Default 5 000. */
  drainMs?: number;
  /** Signals that begin the shutdown and then exit the process (opt-in), e.g. `['SIGTERM', 'SIGINT']`. */
  signals?: readonly NodeJS.Signals[];
}

/** Where the process stands: accepting work, finishing it, or done. */
export type ShutdownState = 'running' | 'draining' | 'stopped';

/** One unit of admitted work: run it under `ctx` and call `end()` when it is over. */
export interface Admission {
  /** A child of the caller's context, cancelled with cause `shutdown` when the grace runs out. */
  readonly ctx: Context;
  /** Marks the work finished; later calls do nothing. */
  end(): void;
}

const SHUTDOWN = { code: 'shutdown' } as const;

/**
 * Coordinates a graceful shutdown. While running it admits work (`execute`, or `admit` for
 * adapters) and counts it. `begin()` turns readiness off, refuses new work with ShuttingDownError,
 * runs the stop hooks (stop accepting: close servers, pause consumers), lets in-flight work finish
 * within the grace, then cancels what is left with cause `shutdown`, and runs the drain hooks in
 * the order registered (commit offsets, flush spans).
 */
export class Shutdown implements Policy {
  readonly #grace: number;
  readonly #settleMs: number;
  readonly #drainMs: number;
  readonly #inFlight = new Set<CancelableContext>();
  readonly #stopHooks: (() => unknown)[] = [];
  readonly #drainHooks: ((ctx: Context) => unknown)[] = [];
  #state: ShutdownState = 'running';
  #done: Promise<void> | undefined;
  #idle: (() => void) | undefined;

  constructor(options: ShutdownOptions = {}) {
    this.#grace = options.grace ?? 10_000;
    this.#settleMs = options.settleMs ?? 1_000;
    this.#drainMs = options.drainMs ?? 5_000;
    for (const signal of options.signals ?? []) {
      process.once(signal, () => {
        this.begin().then(
          () => process.exit(process.exitCode ?? 0),
          () => process.exit(1),
        );
      });
    }
  }

  /** Where the process stands. */
  get state(): ShutdownState {
    return this.#state;
  }

  /** True while work is admitted: what a readiness endpoint reports. */
  get ready(): boolean {
    return this.#state === 'running';
  }

  /** Admitted work not yet ended. */
  get inFlight(): number {
    return this.#inFlight.size;
  }

  /** Registers a hook run as soon as shutdown begins, to stop accepting work; not awaited. */
  onStop(hook: () => unknown): void {
    this.#stopHooks.push(hook);
  }

  /** Registers a hook run, and awaited, once in-flight work has ended; it gets a context bounded by `drainMs`. */
  onDrain(hook: (ctx: Context) => unknown): void {
    this.#drainHooks.push(hook);
  }

  /** Admits one unit of work under a child of `parent`, or returns undefined once shutdown has begun. */
  admit(parent: Context = current()): Admission | undefined {
    if (this.#state !== 'running') return undefined;
    const ctx = withCancel(parent);
    this.#inFlight.add(ctx);
    let ended = false;
    return {
      ctx,
      end: () => {
        if (ended) return;
        ended = true;
        this.#inFlight.delete(ctx);
        ctx.cancel();
        if (this.#inFlight.size === 0) this.#idle?.();
      },
    };
  }

  async execute<T>(fn: (ctx: Context) => T | PromiseLike<T>): Promise<T> {
    const admission = this.admit();
    if (admission === undefined) throw new ShuttingDownError();
    try {
      return await runUnder(admission.ctx, fn);
    } finally {
      admission.end();
    }
  }

  /** Begins the shutdown (once; later calls return the same promise), resolving when the drain hooks are done. */
  begin(): Promise<void> {
    this.#done ??= this.#run();
    return this.#done;
  }

  async #run(): Promise<void> {
    this.#state = 'draining';
    for (const hook of this.#stopHooks) {
      Promise.resolve()
        .then(hook)
        .catch((error: unknown) => diag.error('ctxflow: shutdown stop hook failed', error));
    }
    if (!(await this.#whenIdle(this.#grace))) {
      for (const ctx of this.#inFlight) ctx.cancel(SHUTDOWN);
      await this.#whenIdle(this.#settleMs);
    }
    const drain = withTimeout(background(), this.#drainMs);
    try {
      for (const hook of this.#drainHooks) {
        try {
          await drain.run(() => hook(drain));
        } catch (error) {
          diag.error('ctxflow: shutdown drain hook failed', error);
        }
      }
    } finally {
      drain.cancel();
      this.#state = 'stopped';
    }
  }

  /** Resolves true once no work is in flight, false if `ms` pass first. */
  #whenIdle(ms: number): Promise<boolean> {
    if (this.#inFlight.size === 0) return Promise.resolve(true);
    return new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => {
        this.#idle = undefined;
        resolve(false);
      }, ms);
      this.#idle = () => {
        clearTimeout(timer);
        this.#idle = undefined;
        resolve(true);
      };
    });
  }
}

/** A graceful-shutdown coordinator; see `Shutdown`. */
export function shutdown(options?: ShutdownOptions): Shutdown {
  return new Shutdown(options);
}
