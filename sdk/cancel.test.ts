import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CancelRegistry } from './cancel.ts';

test('ends of ids nobody here knows cost bounded memory: the oldest go first', () => {
  const registry = new CancelRegistry({ horizonMs: 60_000, maxEntries: 1_000 });
  for (let i = 0; i < 2_000; i++) registry.record(`unknown-${i}`, { code: 'client_disconnected' });
  assert.equal(registry.size, 1_000);
  assert.equal(registry.cancelled('unknown-999'), undefined, 'the oldest forgotten');
  assert.deepEqual(registry.cancelled('unknown-1999'), { code: 'client_disconnected' });
});

test('an end is forgotten after the horizon', (t) => {
  t.mock.timers.enable({ apis: ['Date'], now: 1_000_000 });
  const registry = new CancelRegistry({ horizonMs: 1_000, maxEntries: 10 });
  registry.record('a', { code: 'deadline_exceeded' });
  t.mock.timers.tick(999);
  assert.deepEqual(registry.cancelled('a'), { code: 'deadline_exceeded' });
  t.mock.timers.tick(1);
  assert.equal(registry.cancelled('a'), undefined);
  // Expired entries are pruned as new ones come in, not only when looked up.
  registry.record('b', { code: 'cancelled' });
  t.mock.timers.tick(1_000);
  registry.record('c', { code: 'cancelled' });
  assert.equal(registry.size, 1);
});

test('every listener hears each end; one that throws does not stop the others', () => {
  const registry = new CancelRegistry({ horizonMs: 1_000, maxEntries: 10 });
  const heard: string[] = [];
  registry.onCancel(() => {
    throw new Error('listener bug');
  });
  const off = registry.onCancel((id, cause, at) => heard.push(`${id} ${cause.code} ${at}`));
  registry.record('r1', { code: 'shutdown' }, 5);
  off();
  registry.record('r2', { code: 'shutdown' }, 6);
  assert.deepEqual(heard, ['r1 shutdown 5']);
});
