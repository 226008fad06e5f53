import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { trackTimers } from '../test/support/timers.ts';
import { schedule, scheduledCount, unschedule } from './deadline-queue.ts';

/** A target that records when it fired. */
function target(log: { name: string; at: number; firedAt: number }[], name: string, at: number) {
  return { timerFired: () => log.push({ name, at, firedAt: Date.now() }) };
}

describe('deadline queue', () => {
  it('fires each target once, never before its time, earliest first; unscheduled ones never', async () => {
    const log: { name: string; at: number; firedAt: number }[] = [];
    const now = Date.now();
    const late = now + 60;
    const early = now + 20;
    schedule(target(log, 'late', late), late);
    schedule(target(log, 'early-1', early), early);
    const dropped = schedule(target(log, 'dropped', early), early);
    schedule(target(log, 'early-2', early), early);
    unschedule(dropped);
    unschedule(dropped);
    while (log.length < 3) await sleep(5);
    await sleep(20);
    assert.deepEqual(log.map((entry) => entry.name).sort(), ['early-1', 'early-2', 'late']);
    assert.equal(log.at(-1)?.name, 'late');
    for (const entry of log) assert.ok(entry.firedAt >= entry.at, `${entry.name} fired early`);
  });

  it('keeps one timer for any number of entries; it stops once it fires with none left', async () => {
    const timers = trackTimers();
    try {
      const before = await timers.live();
      const queued = scheduledCount();
      const at = Date.now() + 60_000;
      const entries = Array.from({ length: 1_000 }, (_, i) => schedule({ timerFired() {} }, at + (i % 7)));
      // At most one beside those there before, which may include the queue's own already.
      assert.ok((await timers.live()) <= before + 1);
      // An earlier deadline re-arms the one timer instead of adding one.
      const sooner = schedule({ timerFired() {} }, Date.now() + 30);
      assert.ok((await timers.live()) <= before + 1);
      assert.equal(scheduledCount(), queued + 1_001);
      for (const entry of [...entries, sooner]) unschedule(entry);
      assert.equal(scheduledCount(), queued);
      // Left armed for the earliest time (re-arming per request would cost what a timer per
      // context does), it finds nothing then and stops.
      await sleep(60);
      assert.ok((await timers.live()) <= before);
    } finally {
      timers.stop();
    }
  });

  it('a target that schedules another, due already, when it fires gets that one fired too', async () => {
    const fired: string[] = [];
    const second = { timerFired: () => fired.push('second') };
    const first = {
      timerFired: () => {
        fired.push('first');
        schedule(second, Date.now() - 1);
      },
    };
    schedule(first, Date.now() + 5);
    while (fired.length < 2) await sleep(5);
    assert.deepEqual(fired, ['first', 'second']);
  });
});
