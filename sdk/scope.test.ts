import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createContextKey, ROOT_CONTEXT } from '@opentelemetry/api';
import { chained, withValue } from './scope.ts';

const a = createContextKey('test.scope.a');
const b = createContextKey('test.scope.b');

test('withValue reads as setValue does: the nearest value wins, a deleted key reads undefined', () => {
  const base = ROOT_CONTEXT.setValue(a, 'base');
  const one = withValue(base, b, 'one');
  assert.equal(one.getValue(a), 'base');
  assert.equal(one.getValue(b), 'one');
  const two = one.setValue(a, 'two');
  assert.equal(two.getValue(a), 'two');
  assert.equal(one.getValue(a), 'base', 'the parent is unchanged');
  const deleted = two.deleteValue(a);
  assert.equal(deleted.getValue(a), undefined);
  assert.equal(deleted.getValue(b), 'one');
  assert.equal(chained(base).getValue(a), 'base');
  assert.equal(chained(one), one, 'a chain is chained already');
});

test('a long chain is folded into the base kind of context, keeping every value', () => {
  let otelContext = ROOT_CONTEXT.setValue(b, 'kept');
  const keys = Array.from({ length: 40 }, (_, i) => createContextKey(`test.scope.${i}`));
  for (const [i, key] of keys.entries()) otelContext = withValue(otelContext, key, i);
  otelContext = withValue(otelContext, b, undefined);
  for (const [i, key] of keys.entries()) assert.equal(otelContext.getValue(key), i);
  assert.equal(otelContext.getValue(b), undefined);
  // A poller deriving each context from the last: the chain over the folded context stays short.
  const depth = (otelContext as { depth?: number }).depth ?? 0;
  assert.ok(depth >= 1 && depth <= 8, `depth ${depth}`);
});
