/**
 * One JSON log line per event, with the request's trace id and what is left of its budget: how
 * these services correlate their logs (and how the demo follows each request across processes).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { current } from 'ctxflow';

export function log(event: string, fields: Record<string, unknown> = {}): void {
  const ctx = current();
  const remaining = ctx.remaining();
  const line = {
    service: process.env.OTEL_SERVICE_NAME,
    event,
    traceId: ctx.traceId,
    remainingMs: Number.isFinite(remaining) ? remaining : null,
    ...fields,
  };
  console.log(JSON.stringify(line));
}

/** Works for `ms`, or until the request's context ends: then throws its typed error, with the cause. */
export async function work(ms: number): Promise<void> {
  const ctx = current();
  await sleep(ms, undefined, { signal: ctx.signal }).catch(() => ctx.throwIfDone());
}

/** Listens on 127.0.0.1 (port from PORT, else any) and logs the port the demo reads. */
export function listening(port: number): void {
  console.log(JSON.stringify({ service: process.env.OTEL_SERVICE_NAME, event: 'listening', port }));
}
