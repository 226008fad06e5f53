import { inspect } from 'node:util';
import { diag } from '@opentelemetry/api';
import { type CancelableContext, type Context, current } from '../context.ts';

/** Where a fault came from. */
export type FaultKind = 'uncaughtException' | 'unhandledRejection';

/** What the fault hooks do besides cancelling the request's context. */
export interface FaultHookOptions {
  /** Logs a fault with the trace id of the context it happened in. Default: `diag.error`. */
  log?: (message: string, error: unknown, ctx: Context) => void;
  /** Ends the process after a fault outside any request. Default `process.exit(1)`, after printing the error to stderr. */
  exit?: (error: unknown) => void;
}

function exitProcess(error: unknown): void {
  process.stderr.write(`${inspect(error)}\n`);
  process.exit(1);
}

function logToDiag(message: string, error: unknown): void {
  diag.error(message, error);
}

/**
 * Installs process-level `uncaughtException` and `unhandledRejection` hooks. A fault raised under a
 * request's context (Node runs these events in the context of the fault) is logged with the
 * request's trace id, and that context is cancelled with cause `error`, so its work stops and its
 * caller gets an answer, while the process keeps serving others. A fault outside any request
 * (background work, startup) still ends the process, as Node would: nothing bounds the damage.
 * Returns a function that removes the hooks.
 */
export function installFaultHooks(options: FaultHookOptions = {}): () => void {
  const log = options.log ?? logToDiag;
  const exit = options.exit ?? exitProcess;
  const handle = (kind: FaultKind) => (error: unknown) => {
    const ctx = current();
    const wasDone = ctx.done;
    // Roots (background, withoutCancel) ignore cancel: a fault there belongs to no request.
    const cancel = (ctx as Partial<CancelableContext>).cancel;
    if (typeof cancel === 'function') cancel.call(ctx, { code: 'error', message: kind });
    const inRequest = wasDone || ctx.done;
    log(
      `ctxflow: ${kind} ${inRequest ? 'in' : 'outside any'} request, trace ${ctx.traceId ?? 'unknown'}`,
      error,
      ctx,
    );
    if (!inRequest) exit(error);
  };
  const onException = handle('uncaughtException');
  const onRejection = handle('unhandledRejection');
  process.on('uncaughtException', onException);
  process.on('unhandledRejection', onRejection);
  return () => {
    process.off('uncaughtException', onException);
    process.off('unhandledRejection', onRejection);
  };
}
