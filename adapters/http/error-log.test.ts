import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { errorLogger } from './error-log.ts';

describe('errorLogger()', () => {
  /** Errors thrown from one place: the same signature each time. */
  const failAt = (message: string) => new Error(message);

  test('prints the first of identical errors with its stack and counts the rest per interval', (t) => {
    t.mock.timers.enable({ apis: ['setTimeout'] });
    const lines: string[] = [];
    const log = errorLogger({ intervalMs: 1_000, write: (line) => lines.push(line) });
    for (let i = 0; i < 50; i++) log(failAt('db down'));
    log(failAt('cache down'));
    log(failAt('cache down'));
    assert.equal(lines.length, 2);
    assert.match(lines[0] as string, /^Error: db down\n {4}at /);
    assert.match(lines[1] as string, /^Error: cache down\n {4}at /);
    t.mock.timers.tick(1_000);
    assert.equal(lines.length, 4);
    assert.match(lines[2] as string, /^49 more in the last 1 s: Error: db down \(.*error-log\.test\.ts/);
    assert.match(lines[3] as string, /^1 more in the last 1 s: Error: cache down/);
    // The next interval starts with the stack again; an interval without repeats prints no count.
    log(failAt('db down'));
    t.mock.timers.tick(1_000);
    assert.equal(lines.length, 5);
    assert.match(lines[4] as string, /^Error: db down\n/);
  });

  test('the same message thrown from two places is two errors', (t) => {
    t.mock.timers.enable({ apis: ['setTimeout'] });
    const lines: string[] = [];
    const log = errorLogger({ write: (line) => lines.push(line) });
    log(new Error('same'));
    log(new Error('same'));
    assert.equal(lines.length, 2);
  });

  test('intervalMs 0 prints every error with its stack; non-errors are printed as strings', () => {
    const lines: string[] = [];
    const log = errorLogger({ intervalMs: 0, write: (line) => lines.push(line) });
    for (let i = 0; i < 3; i++) log(failAt('each'));
    log('a string');
    assert.equal(lines.length, 4);
    assert.ok(lines.slice(0, 3).every((line) => line.startsWith('Error: each\n    at ')));
    assert.equal(lines[3], 'a string');
  });

  test('distinct errors beyond 1000 per interval are counted together', (t) => {
    t.mock.timers.enable({ apis: ['setTimeout'] });
    const lines: string[] = [];
    const log = errorLogger({ intervalMs: 1_000, write: (line) => lines.push(line) });
    for (let i = 0; i < 1_100; i++) log(failAt(`order ${i} failed`));
    assert.equal(lines.length, 1_001);
    t.mock.timers.tick(1_000);
    assert.equal(lines.at(-1), '99 more in the last 1 s: errors beyond the first 1000 distinct ones');
  });
});
