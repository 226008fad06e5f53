import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { holdEventLoop } from '../../test/support/loop.ts';
import { background, run, withCancel, withTimeout } from '../context.ts';
import { CancelledError, DeadlineExceededError } from '../errors.ts';
import { bulkhead } from './bulkhead.ts';
import { BulkheadFullError } from './errors.ts';

function gate(): { wait: Promise<void>; open(): void } {
  let open = () => {};
  const wait = new Promise<void>((resolve) => (open = resolve));
  return { wait, open };
}

holdEventLoop();

describe('bulkhead', () => {
  it('runs up to limit at once, queues up to queue, refuses the rest with a typed error', async () => {
    const b = bulkhead({ name: 'db', limit: 1, queue: 1 });
    const first = gate();
    const order: string[] = [];
    const a = b.execute(async () => {
      await first.wait;
      order.push('a');
    });
    const q = b.execute(() => {
      order.push('q');
    });
    assert.equal(b.active, 1);
    assert.equal(b.queued, 1);
    await assert.rejects(
      b.execute(() => 'c'),
      (error: unknown) => {
        assert.ok(error instanceof BulkheadFullError);
        assert.deepEqual(error.cause, { code: 'bulkhead_full', message: 'db' });
        return true;
      },
    );
    first.open();
    await Promise.all([a, q]);
    assert.deepEqual(order, ['a', 'q']);
    assert.equal(b.active, 0);
  });

  it('a queued call leaves at its deadline or its cancellation, with the cause, and frees its place', async () => {
    const b = bulkhead({ limit: 1, queue: 2 });
    const first = gate();
    const running = b.execute(() => first.wait);
    const short = withTimeout(background(), 20);
    const started = performance.now();
    const timedOut = run(short, () => b.execute(() => 'never'));
    const cancelled = withCancel(background());
    const gone = run(cancelled, () => b.execute(() => 'never'));
    cancelled.cancel('client_disconnected');
    await assert.rejects(
      gone,
      (error: unknown) => error instanceof CancelledError && error.cause.code === 'client_disconnected',
    );
    assert.equal(b.queued, 1);
    await assert.rejects(timedOut, DeadlineExceededError);
    assert.ok(performance.now() - started < 500);
    assert.equal(b.queued, 0);
    first.open();
    await running;
    assert.equal(await b.execute(() => 'free'), 'free');
  });
});
