import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { holdEventLoop } from '../../test/support/loop.ts';
import { background, run, withCancel, withTimeout } from '../context.ts';
import { DeadlineExceededError } from '../errors.ts';
import { breaker } from './breaker.ts';
import { CircuitOpenError } from './errors.ts';

const fail = () => {
  throw new Error('down');
};

holdEventLoop();

describe('circuit breaker', () => {
  it('opens on the failure ratio once the volume is reached, half-opens after openMs, closes on probe success', async () => {
    let now = 1_000;
    const b = breaker({
      name: 'inventory',
      failureRatio: 0.5,
      minimumVolume: 4,
      openMs: 100,
      now: () => now,
    });
    await b.execute(() => 'ok');
    for (let i = 0; i < 2; i++) await assert.rejects(b.execute(fail), /down/);
    assert.equal(b.state, 'closed', 'volume not reached yet');
    await assert.rejects(b.execute(fail), /down/);
    assert.equal(b.state, 'open');

    let called = false;
    await assert.rejects(
      b.execute(() => {
        called = true;
      }),
      (error: unknown) => {
        assert.ok(error instanceof CircuitOpenError);
        assert.equal(error.code, 'circuit_open');
        assert.deepEqual(error.cause, { code: 'circuit_open', message: 'inventory' });
        assert.equal(error.retryAfterMs, 100);
        return true;
      },
    );
    assert.equal(called, false);

    now += 100;
    assert.equal(b.state, 'half-open');
    let release = () => {};
    const probe = b.execute(() => new Promise<void>((resolve) => (release = resolve)));
    await assert.rejects(
      b.execute(() => 'second probe'),
      CircuitOpenError,
      'one probe at a time',
    );
    release();
    await probe;
    assert.equal(b.state, 'closed');
  });

  it('a failed probe opens it again', async () => {
    let now = 0;
    const b = breaker({ minimumVolume: 1, openMs: 50, now: () => now });
    await assert.rejects(b.execute(fail));
    assert.equal(b.state, 'open');
    now = 50;
    await assert.rejects(b.execute(fail), /down/);
    assert.equal(b.state, 'open');
    now = 99;
    await assert.rejects(
      b.execute(() => 'x'),
      CircuitOpenError,
    );
    now = 100;
    assert.equal(await b.execute(() => 'x'), 'x');
    assert.equal(b.state, 'closed');
  });

  it('does not count failures caused by the caller own deadline or cancellation', async () => {
    const b = breaker({ minimumVolume: 1, failureRatio: 0.1 });
    const short = withTimeout(background(), 10);
    await assert.rejects(
      run(short, () =>
        b.execute(
          (ctx) =>
            new Promise((_, reject) => ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason))),
        ),
      ),
      DeadlineExceededError,
    );
    const cancelled = withCancel(background());
    await assert.rejects(
      run(cancelled, () =>
        b.execute(() => {
          cancelled.cancel('client_disconnected');
          throw new Error('aborted socket');
        }),
      ),
    );
    assert.equal(b.state, 'closed');
    await assert.rejects(b.execute(fail));
    assert.equal(b.state, 'open');
  });
});
