import assert from 'node:assert/strict';
import { getEventListeners } from 'node:events';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { context as otel, trace } from '@opentelemetry/api';
import { trackTimers } from '../test/support/timers.ts';
import { cancelAt } from './context.ts';
import { scheduledCount } from './deadline-queue.ts';
import {
  background,
  CancelledError,
  ContextDoneError,
  current,
  DeadlineExceededError,
  run,
  withCancel,
  withDeadline,
  withoutCancel,
  withTimeout,
} from './index.ts';
import { ensureContextManager } from './scope.ts';

describe('deadlines', () => {
  it('a child never outlives its parent', () => {
    const parent = withTimeout(background(), 100);
    const child = withTimeout(parent, 10_000);
    assert.equal(child.deadline, parent.deadline);
    const shorter = withTimeout(parent, 10);
    assert.ok((shorter.deadline ?? 0) < (parent.deadline ?? 0));
    parent.cancel();
  });

  it('remaining() counts down and stops at zero', async () => {
    const ctx = withTimeout(background(), 30);
    assert.ok(ctx.remaining() <= 30 && ctx.remaining() > 20);
    await sleep(40);
    assert.equal(ctx.remaining(), 0);
    assert.equal(background().remaining(), Number.POSITIVE_INFINITY);
  });

  it('an unobserved context knows it is past its deadline without a timer', async () => {
    const ctx = withTimeout(background(), 5);
    await sleep(15);
    assert.equal(ctx.done, true);
    assert.deepEqual(ctx.cause, { code: 'deadline_exceeded' });
    assert.throws(() => ctx.throwIfDone(), DeadlineExceededError);
  });

  it('an observed context aborts its signal on time', async () => {
    const ctx = withTimeout(background(), 20);
    const started = Date.now();
    // The context's timer is unref'd by design: something else must keep the process alive.
    const keepAlive = setTimeout(() => {}, 1000);
    const reason = await new Promise((resolve) =>
      ctx.signal.addEventListener('abort', () => resolve(ctx.signal.reason)),
    );
    clearTimeout(keepAlive);
    assert.ok(Date.now() - started >= 19);
    assert.ok(reason instanceof DeadlineExceededError);
    assert.equal(reason, ctx.error);
  });

  it('withDeadline takes a Date and rejects an invalid one', () => {
    const at = new Date(Date.now() + 1000);
    assert.equal(withDeadline(background(), at).deadline, at.getTime());
    assert.throws(() => withDeadline(background(), new Date('nope')), RangeError);
    assert.throws(() => withTimeout(background(), Number.NaN), RangeError);
  });

  it('a zero or negative timeout is done at once', () => {
    assert.equal(withTimeout(background(), 0).done, true);
    assert.equal(withTimeout(background(), -5).cause?.code, 'deadline_exceeded');
  });
});

describe('cancellation', () => {
  it('cancelling a parent ends every descendant with the parent cause', () => {
    const root = withCancel(background());
    const child = withCancel(root);
    const grandchild = withTimeout(child, 10_000);
    const observed = withCancel(grandchild);
    const seen: string[] = [];
    observed.onDone((error) => seen.push(error.cause.code));
    root.cancel({ code: 'shutdown', message: 'draining' });
    for (const ctx of [child, grandchild, observed]) {
      assert.deepEqual(ctx.cause, { code: 'shutdown', message: 'draining' });
      assert.ok(ctx.error instanceof CancelledError);
    }
    assert.deepEqual(seen, ['shutdown']);
  });

  it('the first cause wins and cancel is idempotent', () => {
    const ctx = withCancel(background());
    const fired: string[] = [];
    ctx.onDone((error) => fired.push(error.cause.code));
    ctx.cancel('client_disconnected');
    ctx.cancel('error');
    ctx.cancel();
    assert.equal(ctx.cause?.code, 'client_disconnected');
    assert.deepEqual(fired, ['client_disconnected']);
  });

  it('cancelAt judges the cancel at the instant given, not at the clock of the call', () => {
    const now = Date.now();
    const late = withDeadline(background(), now - 5);
    cancelAt(late, 'shutdown', now - 10);
    assert.equal(late.cause?.code, 'shutdown');
    const expired = withDeadline(background(), now - 5);
    cancelAt(expired, 'shutdown', now);
    assert.equal(expired.cause?.code, 'deadline_exceeded');
  });

  it('a child cancelled first keeps its own cause when the parent ends later', () => {
    const parent = withCancel(background());
    const child = withCancel(parent);
    child.cancel('upstream_cancelled');
    parent.cancel('shutdown');
    assert.equal(child.cause?.code, 'upstream_cancelled');
  });

  it('a parent cancelled before the child deadline gives its cause, even when read after the deadline', async () => {
    const parent = withCancel(background());
    const child = withTimeout(parent, 10);
    parent.cancel('shutdown');
    await sleep(20);
    assert.equal(child.cause?.code, 'shutdown');
  });

  it('cancel() on an unobserved context that has already ended, by its deadline or its parent, keeps that cause', async () => {
    const parent = withCancel(background());
    const child = withTimeout(parent, 10_000);
    parent.cancel('shutdown');
    child.cancel('error');
    assert.equal(child.cause?.code, 'shutdown');
    const late = withTimeout(withTimeout(background(), 10_000), 5);
    await sleep(15);
    late.cancel('error');
    assert.equal(late.cause?.code, 'deadline_exceeded');
  });

  it('cancelling a child leaves the parent live', () => {
    const parent = withCancel(background());
    const child = withCancel(parent);
    child.signal;
    child.cancel();
    assert.equal(parent.done, false);
    assert.equal(child.cause?.code, 'cancelled');
  });

  it('a signal taken after the end is already aborted with the error', () => {
    const ctx = withCancel(background());
    ctx.cancel('error');
    assert.equal(ctx.signal.aborted, true);
    assert.ok(ctx.signal.reason instanceof ContextDoneError);
    assert.equal(ctx.signal.reason.cause.code, 'error');
  });

  it('user causes must be tokens; messages are sanitized', () => {
    const ctx = withCancel(background());
    assert.throws(() => ctx.cancel('Not A Token'), TypeError);
    ctx.cancel({ code: 'out_of_stock', message: 'sku <script>\n' });
    assert.deepEqual(ctx.cause, { code: 'out_of_stock', message: 'sku _script__' });
  });

  it('onDone runs at once on a done context and its disposer unregisters', () => {
    const done = withCancel(background());
    done.cancel();
    let calls = 0;
    done.onDone(() => calls++);
    assert.equal(calls, 1);
    const live = withCancel(background());
    const dispose = live.onDone(() => calls++);
    dispose();
    live.cancel();
    assert.equal(calls, 1);
  });

  it('a throwing callback neither stops the others nor throws into cancel()', () => {
    const ctx = withCancel(background());
    let ran = false;
    ctx.onDone(() => {
      throw new Error('boom');
    });
    ctx.onDone(() => {
      ran = true;
    });
    assert.doesNotThrow(() => ctx.cancel());
    assert.equal(ran, true);
  });

  it('withoutCancel keeps the trace but neither deadline nor cancellation', () => {
    const parent = withTimeout(background(), 5);
    const detached = withoutCancel(parent);
    parent.cancel();
    assert.equal(detached.done, false);
    assert.equal(detached.deadline, undefined);
  });

  it('a disposed context is cancelled, its parent is not', () => {
    const parent = withCancel(background());
    const child = withCancel(parent);
    child[Symbol.dispose]();
    assert.equal(child.done, true);
    assert.equal(parent.done, false);
  });
});

describe('resources', () => {
  it('a parent holds one link per observed child and drops it when the child ends', () => {
    const parent = withCancel(background());
    const listeners = () => getEventListeners(parent.signal, 'abort').length;
    for (let i = 0; i < 1000; i++) {
      const child = withTimeout(parent, 1000);
      child.signal;
      child.cancel();
    }
    assert.equal(listeners(), 0);
    parent.cancel();
  });

  it('a parent observed only through its children leaves the deadline queue when they end', () => {
    const before = scheduledCount();
    const parent = withTimeout(background(), 60_000);
    const child = withCancel(parent);
    child.onDone(() => {});
    assert.equal(scheduledCount(), before + 1);
    child.cancel();
    assert.equal(scheduledCount(), before);
    assert.equal(parent.done, false);
  });

  it('an unobserved context allocates no timer; observed ones share one and leave the queue when released', async () => {
    const timers = trackTimers();
    try {
      const before = await timers.live();
      const queued = scheduledCount();
      const contexts = Array.from({ length: 100 }, () => withTimeout(background(), 10_000));
      assert.equal(await timers.live(), before);
      assert.equal(scheduledCount(), queued);
      for (const ctx of contexts) ctx.signal;
      // One timer at most beside those there before (which may include the queue's own already).
      assert.ok((await timers.live()) <= before + 1);
      assert.equal(scheduledCount(), queued + 100);
      for (const ctx of contexts) ctx.cancel();
      assert.equal(scheduledCount(), queued);
    } finally {
      timers.stop();
    }
  });

  it('a deadline beyond the timer range still works', () => {
    const ctx = withTimeout(background(), 40 * 24 * 3600 * 1000);
    ctx.onDone(() => {});
    assert.equal(ctx.done, false);
    ctx.cancel();
  });
});

describe('run and current', () => {
  it('current() follows run through awaits and timers', async () => {
    assert.equal(current(), background());
    const ctx = withTimeout(background(), 1000);
    await run(ctx, async () => {
      assert.equal(current(), ctx);
      await sleep(1);
      assert.equal(current(), ctx);
      await new Promise<void>((resolve) =>
        setTimeout(() => {
          assert.equal(current(), ctx);
          resolve();
        }, 1),
      );
    });
    assert.equal(current(), background());
    ctx.cancel();
  });

  it('ctx.run nests and restores', () => {
    const outer = withCancel(background());
    const inner = withCancel(outer);
    outer.run(() => {
      inner.run(() => assert.equal(current(), inner));
      assert.equal(current(), outer);
    });
  });
});

describe('trace id', () => {
  it('a root context takes the active span trace id; children inherit it', () => {
    ensureContextManager();
    const spanContext = {
      traceId: '4bf92f3577b34da6a3ce929d0e0e4736',
      spanId: '00f067aa0ba902b7',
      traceFlags: 1,
    };
    const root = otel.with(trace.setSpanContext(otel.active(), spanContext), () =>
      withTimeout(background(), 100),
    );
    assert.equal(root.traceId, spanContext.traceId);
    assert.equal(withCancel(root).traceId, spanContext.traceId);
    assert.equal(withoutCancel(root).traceId, spanContext.traceId);
    assert.equal(withCancel(background()).traceId, undefined);
  });
});

describe('roots', () => {
  it('background and detached contexts never end, and children of them still do', () => {
    const root = background() as ReturnType<typeof withCancel>;
    root.cancel();
    assert.equal(root.done, false);
    const detached = withoutCancel(withCancel(background())) as ReturnType<typeof withCancel>;
    detached.cancel();
    assert.equal(detached.done, false);
    const child = withCancel(detached);
    child.signal;
    child.cancel('shutdown');
    assert.equal(child.cause?.code, 'shutdown');
  });

  it('the plain causes share one error each, so ending a context allocates none', () => {
    const a = withCancel(background());
    const b = withCancel(background());
    a.cancel();
    b.cancel();
    assert.equal(a.error, b.error);
    assert.ok(a.error instanceof CancelledError);
    const c = withCancel(background());
    c.cancel({ code: 'cancelled', message: 'by user' });
    assert.notEqual(c.error, a.error);
  });
});
