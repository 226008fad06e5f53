/**
 * The default error log of the HTTP server side: each distinct handler error printed once with its
 * stack, then its repeats counted, so a downstream failing for every request does not print a
 * stack per request.
 */

/** Options of `errorLogger()`. */
export interface ErrorLoggerOptions {
  /**
   * An error is printed with its stack, then its repeats (same name, message and first frame) are
   * counted for this many milliseconds and printed as one line. 0 prints every error with its
   * stack. Default 60 000.
   */
  intervalMs?: number;
  /** Where lines go. Default `console.error`. */
  write?: (line: string) => void;
}

/** Distinct errors tracked per interval; beyond that, repeats of new ones are counted together. */
const MAX_SIGNATURES = 1_000;
const OTHER_SIGNATURE = 'errors beyond the first 1000 distinct ones';

/**
 * An error reporter (the `onError` of `errorHandler` and `withDeadlines`; their default) that keeps
 * a flood of identical failures out of the log: the first occurrence of each error is printed with its stack; repeats within
 * `intervalMs` are counted and printed as one line (`N more in the last 60 s: <error>`) when the
 * interval ends. The interval's timer is unref'd and exists only while repeats are being counted.
 */
export function errorLogger(options: ErrorLoggerOptions = {}): (error: unknown) => void {
  const intervalMs = options.intervalMs ?? 60_000;
  const write = options.write ?? ((line: string) => console.error(line));
  if (!(intervalMs > 0)) return (error) => write(describeError(error));
  const repeats = new Map<string, number>();
  let counting = false;
  const flush = () => {
    counting = false;
    for (const [signature, count] of repeats) {
      if (count > 0) write(`${count} more in the last ${intervalMs / 1000} s: ${signature}`);
    }
    repeats.clear();
  };
  return (error) => {
    let signature = signatureOf(error);
    if (!repeats.has(signature) && repeats.size >= MAX_SIGNATURES) signature = OTHER_SIGNATURE;
    const count = repeats.get(signature);
    if (count !== undefined) {
      repeats.set(signature, count + 1);
      return;
    }
    repeats.set(signature, 0);
    write(describeError(error));
    if (!counting) {
      counting = true;
      setTimeout(flush, intervalMs).unref();
    }
  };
}

function describeError(error: unknown): string {
  return error instanceof Error ? (error.stack ?? String(error)) : String(error);
}

/** Name, message and the first stack frame: the same failure at the same place. */
function signatureOf(error: unknown): string {
  if (!(error instanceof Error)) return String(error).slice(0, 200);
  const stack = error.stack ?? '';
  const frameStart = stack.indexOf('\n    at ');
  const frameEnd = frameStart === -1 ? -1 : stack.indexOf('\n', frameStart + 1);
  const frame = frameStart === -1 ? '' : stack.slice(frameStart + 5, frameEnd === -1 ? undefined : frameEnd);
  return `${error.name}: ${error.message.slice(0, 200)}${frame === '' ? '' : ` (${frame.trim()})`}`;
}
