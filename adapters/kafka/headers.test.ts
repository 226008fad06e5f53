import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { KafkaMessage } from 'kafkajs';
import { recordGetter } from './headers.ts';

/** A record as kafkajs's consumer hands it over: header values as Buffers. */
function record(headers: Record<string, string>, timestamp: string, timestampType = 0): KafkaMessage {
  const raw = Object.fromEntries(Object.entries(headers).map(([k, v]) => [k, Buffer.from(v)]));
  return {
    key: null,
    value: null,
    timestamp,
    attributes: 0,
    offset: '0',
    headers: raw,
    batchContext: { timestampType },
  } as unknown as KafkaMessage;
}

describe('recordGetter', () => {
  it('reads header values as strings', () => {
    const r = record({ 'ctx-deadline': '1765000030000', other: 'x' }, '1765000000000');
    assert.equal(recordGetter.get(r, 'ctx-deadline'), '1765000030000');
    assert.equal(recordGetter.get(r, 'other'), 'x');
    assert.equal(recordGetter.get(r, 'missing'), undefined);
    assert.deepEqual(recordGetter.keys(r).sort(), ['ctx-deadline', 'other']);
  });

  it('implies ctx-timeout from ctx-deadline and the record timestamp (CreateTime)', () => {
    assert.equal(
      recordGetter.get(record({ 'ctx-deadline': '1765000030000' }, '1765000000000'), 'ctx-timeout'),
      '30000',
    );
    // Sent after its deadline by its own clock: nothing left.
    assert.equal(
      recordGetter.get(record({ 'ctx-deadline': '1765000000000' }, '1765000000500'), 'ctx-timeout'),
      '0',
    );
  });

  it('a ctx-timeout sent wins over the implied one', () => {
    const r = record({ 'ctx-deadline': '1765000030000', 'ctx-timeout': '100' }, '1765000000000');
    assert.equal(recordGetter.get(r, 'ctx-timeout'), '100');
  });

  it('implies nothing from a broker timestamp, a malformed deadline or timestamp, or a timestamp far older', () => {
    const logAppend = record({ 'ctx-deadline': '1765000030000' }, '1765000000000', 1);
    assert.equal(recordGetter.get(logAppend, 'ctx-timeout'), undefined);
    for (const deadline of ['176500003000', '17650000300000', '1765000030x00', ' 1765000030000'])
      assert.equal(
        recordGetter.get(record({ 'ctx-deadline': deadline }, '1765000000000'), 'ctx-timeout'),
        undefined,
      );
    for (const timestamp of ['-1', '', 'x', '0'])
      assert.equal(
        recordGetter.get(record({ 'ctx-deadline': '1765000030000' }, timestamp), 'ctx-timeout'),
        undefined,
      );
    // More than ctx-timeout's 8 digits (an event time kept by a relay): no bound.
    assert.equal(
      recordGetter.get(record({ 'ctx-deadline': '1765000030000' }, '1600000000000'), 'ctx-timeout'),
      undefined,
    );
  });

  it('a repeated ctx-deadline implies nothing', () => {
    const r = record({}, '1765000000000');
    (r.headers as Record<string, Buffer[]>)['ctx-deadline'] = [
      Buffer.from('1765000030000'),
      Buffer.from('1765000030000'),
    ];
    assert.equal(recordGetter.get(r, 'ctx-timeout'), undefined);
  });
});
