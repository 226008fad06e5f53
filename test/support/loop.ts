import { after, before } from 'node:test';

/**
 * Keeps the event loop alive while a file's tests run. Context deadline timers are unref'd, so on
 * Node 22 a test awaiting nothing but a deadline would find the loop empty and be cancelled.
 */
export function holdEventLoop(): void {
  let timer: NodeJS.Timeout | undefined;
  before(() => {
    timer = setInterval(() => {}, 60_000);
  });
  after(() => clearInterval(timer));
}
