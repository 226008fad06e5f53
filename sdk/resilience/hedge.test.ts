import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { holdEventLoop } from '../../test/support/loop.ts';
import { background, type Context, run, withTimeout } from '../context.ts';
import { CancelledError } from '../errors.ts';
import { RetryBudget } from './budget.ts';
import { InsufficientBudgetError } from './errors.ts';
import { hedge } from './hedge.ts';
import { shed } from './shed.ts';

function never(ctx: Context): Promise<string> {
  return new Promise((_, reject) => ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason)));
}

holdEventLoop();

describe('hedge', () => {
  it('refuses calls not declared idempotent', () => {
    assert.throws(() => hedge({} as never), TypeError);
  });

  it('sends a second attempt after the delay; the first success wins and the loser is cancelled with hedge_lost', async () => {
    const attempts: Context[] = [];
    const lost: unknown[] = [];
    const h = hedge({ idempotent: true, delayMs: 10 });
    const result = await h.execute((ctx) => {
      attempts.push(ctx);
      if (attempts.length === 1)
        return never(ctx).catch((error) => {
          lost.push(error);
          throw error;
        });
      return 'second';
    });
    assert.equal(result, 'second');
    assert.equal(attempts.length, 2);
    await new Promise((resolve) => setImmediate(resolve));
    assert.ok(lost[0] instanceof CancelledError);
    assert.equal(lost[0].cause.code, 'hedge_lost');
  });

  it('does not hedge when the budget is spent or the caller has too little time left', async () => {
    const h = hedge({
      idempotent: true,
      delayMs: 5,
      budget: new RetryBudget({ percent: 0, minPerSecond: 0 }),
    });
    let calls = 0;
    assert.equal(
      await h.execute(async () => {
        calls++;
        await new Promise((resolve) => setTimeout(resolve, 30));
        return 'only';
      }),
      'only',
    );
    assert.equal(calls, 1);

    const tight = hedge({ idempotent: true, delayMs: 20 });
    const ctx = withTimeout(background(), 30);
    calls = 0;
    await assert.rejects(
      run(ctx, () =>
        tight.execute((attempt) => {
          calls++;
          return never(attempt);
        }),
      ),
    );
    assert.equal(calls, 1, 'with 10 ms left, a call expected to take 20 ms is not hedged');
  });

  it('a fast failure is not hedged: it rejects at once', async () => {
    const h = hedge({ idempotent: true, delayMs: 1_000 });
    const started = performance.now();
    await assert.rejects(
      h.execute(() => Promise.reject(new Error('bad request'))),
      /bad request/,
    );
    assert.ok(performance.now() - started < 500);
  });
});

describe('shed', () => {
  it('refuses work when the remaining budget is below the fixed expected cost', async () => {
    const s = shed({ name: 'report', expectedMs: 100 });
    const ctx = withTimeout(background(), 50);
    let ran = false;
    await assert.rejects(
      run(ctx, () =>
        s.execute(() => {
          ran = true;
        }),
      ),
      (error: unknown) => {
        assert.ok(error instanceof InsufficientBudgetError);
        assert.equal(error.code, 'insufficient_budget');
        assert.equal(error.expectedMs, 100);
        return true;
      },
    );
    assert.equal(ran, false);
    assert.equal(await s.execute(() => 'no deadline'), 'no deadline');
  });

  it('learns the cost from a moving percentile of recent durations', async () => {
    const s = shed({ minSamples: 3, percentile: 0.9 });
    assert.equal(s.expectedMs(), 0);
    for (let i = 0; i < 3; i++) await s.execute(() => new Promise((resolve) => setTimeout(resolve, 20)));
    assert.ok(s.expectedMs() >= 19, `learned ${s.expectedMs()}`);
    const ctx = withTimeout(background(), 5);
    await assert.rejects(
      run(ctx, () => s.execute(() => 'x')),
      InsufficientBudgetError,
    );
  });
});
