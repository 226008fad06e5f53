import { diag, context as otel, ROOT_CONTEXT, trace } from '@opentelemetry/api';
import type { Cause } from '../cause.ts';
import { type Context, current } from '../context.ts';
import { countOutlived } from '../metrics.ts';
import type { Policy } from './policy.ts';

const OUTLIVED = 'ctxflow.outlived';

/** What the detector found: work still running `afterMs` after its context ended. */
export interface OutlivedReport {
  /** The name given to the detector. */
  readonly name: string;
  readonly traceId: string | undefined;
  /** Why the context ended. */
  readonly cause: Cause;
  /** How long the work had been running past its context's end, in milliseconds. */
  readonly overMs: number;
}

/** When the detector reports, and to whom. */
export interface OutlivedOptions {
  /** Named in reports. Default `handler`. */
  name?: string;
  /** Reports work still running this long after its context ended, in milliseconds. Default 1 000. */
  afterMs?: number;
  /** Called with each report, besides the diag log, the span event and the counter. */
  onReport?: (report: OutlivedReport) => void;
}

/**
 * A diagnostic for work that ignores its signal, the Node counterpart of a leaked goroutine: work
 * run through it that is still running `afterMs` after its context ended (cancelled or past its
 * deadline) is reported once, naming the trace and the cause, to the diag logger (warn), as a
 * `ctxflow.outlived` event on the span active when it started, and on the `ctxflow.outlived`
 * counter. Work that honours its signal costs one onDone registration and no timer.
 */
export class OutlivedDetector implements Policy {
  readonly #name: string;
  readonly #afterMs: number;
  readonly #onReport: ((report: OutlivedReport) => void) | undefined;

  constructor(options: OutlivedOptions = {}) {
    this.#name = options.name ?? 'handler';
    this.#afterMs = options.afterMs ?? 1_000;
    this.#onReport = options.onReport;
  }

  async execute<T>(fn: (ctx: Context) => T | PromiseLike<T>): Promise<T> {
    const ctx = current();
    const span = trace.getSpan(otel.active());
    let timer: NodeJS.Timeout | undefined;
    const stop = ctx.onDone((error) => {
      const endedAt = performance.now();
      timer = setTimeout(() => {
        this.#report(
          { name: this.#name, traceId: ctx.traceId, cause: error.cause, overMs: performance.now() - endedAt },
          span,
        );
      }, this.#afterMs);
      timer.unref();
    });
    try {
      return await fn(ctx);
    } finally {
      stop();
      if (timer !== undefined) clearTimeout(timer);
    }
  }

  /** `fn` with every call run through the detector, for handlers: `app.get('/x', detector.bind(handler))`. */
  bind<A extends unknown[], R>(fn: (...args: A) => R): (...args: A) => Promise<Awaited<R>> {
    return (...args: A) => this.execute(() => fn(...args)) as Promise<Awaited<R>>;
  }

  #report(report: OutlivedReport, span: ReturnType<typeof trace.getSpan>): void {
    diag.warn(
      `ctxflow: ${report.name} still running ${Math.round(report.overMs)} ms after its context ended (${report.cause.code}), trace ${report.traceId ?? 'unknown'}`,
    );
    const attributes = { 'ctxflow.cause': report.cause.code, 'ctxflow.over_ms': Math.round(report.overMs) };
    if (span?.isRecording()) {
      span.addEvent(OUTLIVED, attributes);
    } else if (span !== undefined) {
      // The request's span usually ended with its answer: a zero-length child keeps the event in the trace.
      const child = trace.getTracer('ctxflow').startSpan(OUTLIVED, {}, trace.setSpan(ROOT_CONTEXT, span));
      child.addEvent(OUTLIVED, attributes);
      child.end();
    }
    countOutlived(report.name, report.cause.code);
    this.#onReport?.(report);
  }
}

/** An outlived-work detector; see `OutlivedDetector`. */
export function outlived(options?: OutlivedOptions): OutlivedDetector {
  return new OutlivedDetector(options);
}
