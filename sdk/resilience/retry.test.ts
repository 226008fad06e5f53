import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { holdEventLoop } from '../../test/support/loop.ts';
import { background, type Context, run, withCancel, withTimeout } from '../context.ts';
import { CancelledError, DeadlineExceededError } from '../errors.ts';
import { RetryBudget } from './budget.ts';
import { CircuitOpenError } from './errors.ts';
import { retry } from './retry.ts';

const noJitter = () => 0;

holdEventLoop();

describe('retry budget', () => {
  it('allows percent of the requests plus the floor, and forgets them after the window', () => {
    let now = 0;
    const budget = new RetryBudget({ percent: 0.1, minPerSecond: 1, windowMs: 2_000, now: () => now });
    for (let i = 0; i < 50; i++) budget.recordRequest();
    let granted = 0;
    while (budget.tryRetry()) granted++;
    assert.equal(granted, 5 + 2);
    now = 2_000;
    assert.equal(budget.balance(), 2);
  });

  it('refuses bad options with a RangeError', () => {
    assert.throws(() => new RetryBudget({ percent: -1 }), RangeError);
  });
});

describe('retry', () => {
  it('retries a retryable error until an attempt succeeds, each attempt in its own child context', async () => {
    const parent = withCancel(background());
    const seen: Context[] = [];
    const result = await run(parent, () =>
      retry({ maxAttempts: 3, random: noJitter }).execute((ctx) => {
        seen.push(ctx);
        if (seen.length < 3) throw new Error('flaky');
        return 'ok';
      }),
    );
    assert.equal(result, 'ok');
    assert.equal(new Set(seen).size, 3);
    assert.ok(seen.every((ctx) => ctx !== parent));
    assert.ok(
      seen.slice(0, 2).every((ctx) => ctx.done),
      'finished attempts are cancelled, which frees them',
    );
    parent.cancel();
  });

  it('gives up after maxAttempts with the last error, and never retries a refusal', async () => {
    let calls = 0;
    await assert.rejects(
      retry({ maxAttempts: 2, random: noJitter }).execute(() => {
        calls++;
        throw new Error(`fail ${calls}`);
      }),
      /fail 2/,
    );
    calls = 0;
    await assert.rejects(
      retry({ random: noJitter }).execute(() => {
        calls++;
        throw new CircuitOpenError('b', 10);
      }),
      CircuitOpenError,
    );
    assert.equal(calls, 1);
  });

  it('stops at once when the caller cancels during the backoff, with the caller cause', async () => {
    const parent = withCancel(background());
    const policy = retry({ baseMs: 10_000, maxDelayMs: 10_000, random: () => 0.5 });
    let calls = 0;
    const started = performance.now();
    const result = run(parent, () =>
      policy.execute(() => {
        calls++;
        setImmediate(() => parent.cancel('client_disconnected'));
        throw new Error('flaky');
      }),
    );
    await assert.rejects(result, (error: unknown) => {
      assert.ok(error instanceof CancelledError);
      assert.equal(error.cause.code, 'client_disconnected');
      return true;
    });
    assert.equal(calls, 1);
    assert.ok(performance.now() - started < 1_000);
  });

  it('does not sleep into the deadline: gives up at once when the backoff would leave too little', async () => {
    const parent = withTimeout(background(), 5_000);
    const policy = retry({ baseMs: 10_000, maxDelayMs: 10_000, random: () => 0.9 });
    const started = performance.now();
    await assert.rejects(
      run(parent, () =>
        policy.execute(() => {
          throw new Error('flaky');
        }),
      ),
      /flaky/,
    );
    assert.ok(performance.now() - started < 1_000);
    parent.cancel();
  });

  it('never retries the caller own deadline, and an attempt timeout is retried', async () => {
    const parent = withTimeout(background(), 10_000);
    let calls = 0;
    const policy = retry({ maxAttempts: 3, attemptTimeoutMs: 20, random: noJitter });
    const result = await run(parent, () =>
      policy.execute(
        (ctx) =>
          new Promise<string>((resolve, reject) => {
            calls++;
            if (calls === 3) resolve('third');
            else ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason));
          }),
      ),
    );
    assert.equal(result, 'third');
    parent.cancel();

    const short = withTimeout(background(), 30);
    calls = 0;
    await assert.rejects(
      run(short, () =>
        retry({ maxAttempts: 5, random: noJitter, minRemainingMs: 0 }).execute(
          (ctx) =>
            new Promise((_, reject) => {
              calls++;
              ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason));
            }),
        ),
      ),
      DeadlineExceededError,
    );
    assert.equal(calls, 1);
  });

  it('stops when the budget is spent', async () => {
    const budget = new RetryBudget({ percent: 0, minPerSecond: 0.2, windowMs: 10_000 });
    let calls = 0;
    const policy = retry({ maxAttempts: 10, budget, random: noJitter });
    await assert.rejects(
      policy.execute(() => {
        calls++;
        throw new Error('down');
      }),
      /down/,
    );
    assert.equal(calls, 3, 'one request and the two retries of the floor');
  });
});
