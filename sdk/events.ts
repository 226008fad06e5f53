import type { EventEmitter } from 'node:events';

/**
 * Adds `listener` to `emitter` with the method of its prototype, past an OpenTelemetry context
 * manager's `bind(emitter)`: that replaces the instance's listener methods with ones that wrap
 * each listener in a closure and keep it in a WeakMap per event, and instrumentation-http binds
 * every request and response (instrumentation-grpc every call). At a request's rate those WeakMap
 * entries made each young-generation collection several times slower. For listeners that need no
 * OpenTelemetry context of their own; `prepend` puts it first in line.
 */
export function addPlainListener(
  emitter: EventEmitter,
  event: string | symbol,
  listener: (...args: never[]) => void,
  prepend = false,
): void {
  const own = Object.getPrototypeOf(emitter) as EventEmitter;
  (prepend ? own.prependListener : own.on).call(emitter, event, listener as (...args: unknown[]) => void);
}
