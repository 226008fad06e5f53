import { createHook } from 'node:async_hooks';
import { setImmediate as turn } from 'node:timers/promises';

/**
 * Counts live timers, unref'd ones included (process.getActiveResourcesInfo omits those).
 * Node reports a cleared timer's end on a later turn, so `live()` waits one.
 */
export function trackTimers(): { live(): Promise<number>; stop(): void } {
  const timers = new Set<number>();
  const hook = createHook({
    init(id, type) {
      if (type === 'Timeout') timers.add(id);
    },
    destroy(id) {
      timers.delete(id);
    },
  }).enable();
  return {
    async live() {
      await turn();
      await turn();
      return timers.size;
    },
    stop: () => hook.disable(),
  };
}
