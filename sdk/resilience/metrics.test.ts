import assert from 'node:assert/strict';
import { test } from 'node:test';
import { collectMetrics } from '../../test/support/metrics.ts';
import { background, run, withTimeout } from '../context.ts';
import { breaker } from './breaker.ts';
import { bulkhead } from './bulkhead.ts';
import { retry } from './retry.ts';

const points = collectMetrics();

test('retry decisions, breaker transitions and bulkhead waits are counted by policy', async () => {
  const fail = () => Promise.reject(new Error('down'));
  await retry({ name: 'pricing', maxAttempts: 2, baseMs: 0 })
    .execute(fail)
    .catch(() => {});
  assert.deepEqual(
    (await points('ctxflow.retry.decisions'))
      .map((p) => [p.attributes['ctxflow.retry.decision'], p.value])
      .sort(),
    [
      ['attempts', 1],
      ['retried', 1],
    ],
  );

  const b = breaker({ name: 'stock', minimumVolume: 2, failureRatio: 0.5 });
  for (let i = 0; i < 2; i++) await b.execute(fail).catch(() => {});
  assert.deepEqual(
    (await points('ctxflow.breaker.transitions')).map((p) => [
      p.attributes['ctxflow.policy'],
      p.attributes['ctxflow.breaker.state'],
      p.value,
    ]),
    [['stock', 'open', 1]],
  );

  const gate = bulkhead({ name: 'db', limit: 1, queue: 1 });
  let release = () => {};
  const holding = gate.execute(() => new Promise<void>((resolve) => (release = resolve)));
  const ctx = withTimeout(background(), 10_000);
  const waiting = run(ctx, () => gate.execute(() => 'ran'));
  release();
  assert.equal(await waiting, 'ran');
  await holding;
  ctx.cancel();
  const waits = await points('ctxflow.bulkhead.wait');
  assert.deepEqual(
    waits.map((p) => [p.attributes['ctxflow.policy'], p.attributes['ctxflow.bulkhead.outcome'], p.value]),
    [['db', 'admitted', 1]],
  );
});
