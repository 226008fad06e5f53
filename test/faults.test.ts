import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { describe, test } from 'node:test';

function runChild(...args: string[]): Promise<{ code: number | null; events: Record<string, unknown>[] }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['test/support/faults-child.ts', ...args], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.on('data', (chunk: Buffer) => {
      out += chunk.toString();
    });
    const timer = setTimeout(() => child.kill(), 10_000);
    child.on('error', reject);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({
        code,
        events: out
          .trim()
          .split('\n')
          .filter(Boolean)
          .map((line) => JSON.parse(line)),
      });
    });
  });
}

describe('process fault hooks', () => {
  test('a fault inside a request is logged with its trace id and cancels that request with cause error; the process lives', async () => {
    const { code, events } = await runChild();
    assert.equal(code, 0);
    assert.deepEqual(events, [
      { ended: 'thrower', cause: { code: 'error', message: 'uncaughtException' } },
      {
        log: `ctxflow: uncaughtException in request, trace ${'a'.repeat(32)}`,
        error: 'Error: boom in a timer',
      },
      { ended: 'rejecter', cause: { code: 'error', message: 'unhandledRejection' } },
      {
        log: `ctxflow: unhandledRejection in request, trace ${'b'.repeat(32)}`,
        error: 'Error: lost rejection',
      },
      { alive: true },
    ]);
  });

  test('a fault outside any request still ends the process', async () => {
    const { code, events } = await runChild('outside');
    assert.equal(code, 1);
    assert.deepEqual(events.slice(-2), [
      {
        log: 'ctxflow: uncaughtException outside any request, trace unknown',
        error: 'Error: boom at startup',
      },
      { exit: 'Error: boom at startup' },
    ]);
  });
});
