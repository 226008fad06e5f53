import assert from 'node:assert/strict';
import { it } from 'node:test';
import { defaultTextMapGetter } from '@opentelemetry/api';
import { collectMetrics, rejectedCounts } from '../test/support/metrics.ts';
import { decodeCause, inboundDeadline } from './codec.ts';
import { acceptInbound } from './inbound.ts';

const points = collectMetrics();
const rejected = () => rejectedCounts(points);

it('counts every ignored or clamped inbound value by header and reason', async () => {
  inboundDeadline('-1', undefined);
  inboundDeadline('123456789', undefined);
  inboundDeadline(['1', '2'], undefined);
  inboundDeadline('70000', undefined);
  inboundDeadline(undefined, '12');
  decodeCause('<b>');
  inboundDeadline('100', undefined);
  assert.deepEqual(await rejected(), {
    'ctx-timeout/malformed': 1,
    'ctx-timeout/too_large': 1,
    'ctx-timeout/duplicate': 1,
    'ctx-timeout/clamped': 1,
    'ctx-deadline/malformed': 1,
    'ctx-cancel-reason/malformed': 1,
  });
});

it('does not read, so does not count, deadline headers at a trust boundary', async () => {
  const before = await rejected();
  acceptInbound({ 'ctx-timeout': 'junk', 'ctx-deadline': '-1' }, defaultTextMapGetter, {
    trustInbound: false,
  }).ctx.cancel();
  assert.deepEqual(await rejected(), before);
  acceptInbound({ 'ctx-timeout': 'junk' }, defaultTextMapGetter).ctx.cancel();
  assert.equal((await rejected())['ctx-timeout/malformed'], (before['ctx-timeout/malformed'] ?? 0) + 1);
});
