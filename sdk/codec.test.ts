import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  decodeCause,
  decodeDeadline,
  decodeRequestId,
  decodeTimeout,
  encodeCause,
  encodeDeadline,
  encodeTimeout,
  type HeaderValue,
  inboundDeadline,
} from './codec.ts';

/** Any header value a transport may hand over: arbitrary bytes as latin1 text, alone or repeated. */
const anyHeader: fc.Arbitrary<HeaderValue> = fc.oneof(
  fc.constant(undefined),
  fc.uint8Array({ maxLength: 80 }).map((bytes) => Buffer.from(bytes).toString('latin1')),
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc.array(fc.string({ maxLength: 20 }), { maxLength: 3 }),
  fc.oneof(fc.integer(), fc.double(), fc.bigInt()).map(String),
);

const NOW = 1_790_000_000_000;

describe('wire codec', () => {
  it('random bytes in every header never throw and never give a bad deadline', () => {
    fc.assert(
      fc.property(anyHeader, anyHeader, fc.boolean(), (timeout, deadline, preferDeadline) => {
        const result = inboundDeadline(
          timeout,
          deadline,
          { prefer: preferDeadline ? 'deadline' : 'timeout' },
          NOW,
        );
        if (result === undefined) return;
        assert.ok(Number.isSafeInteger(result), `not an integer: ${result}`);
        assert.ok(result - NOW <= 60_000, 'over the cap');
        if (timeout !== undefined && decodeTimeout(timeout) !== undefined)
          assert.ok(result >= NOW, 'negative budget');
      }),
      { numRuns: 5000 },
    );
  });

  it('random bytes never throw from the cause decoder, and what it accepts is safe to reflect', () => {
    fc.assert(
      fc.property(anyHeader, (value) => {
        const cause = decodeCause(value);
        if (cause === undefined) return;
        assert.match(cause.code, /^[a-z][a-z0-9_.-]{0,63}$/);
        if (cause.message !== undefined) assert.match(cause.message, /^[A-Za-z0-9 _.,:;/()=+#@%-]{1,128}$/);
      }),
      { numRuns: 5000 },
    );
  });

  it('encode then decode is the identity on valid values', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 99_999_999 }), (ms) => {
        assert.equal(decodeTimeout(encodeTimeout(ms, 0)), ms);
      }),
    );
    fc.assert(
      fc.property(fc.integer({ min: 1_000_000_000_000, max: 9_999_999_999_999 }), (at) => {
        assert.equal(decodeDeadline(encodeDeadline(at, 0)), at);
      }),
    );
    const code = fc.stringMatching(/^[a-z][a-z0-9_.-]{0,63}$/);
    const message = fc.stringMatching(
      /^[A-Za-z0-9_.,:;/()=+#@%-]([A-Za-z0-9 _.,:;/()=+#@%-]{0,126}[A-Za-z0-9_.,:;/()=+#@%-])?$/,
    );
    fc.assert(
      fc.property(code, fc.option(message, { nil: undefined }), (c, m) => {
        const cause = m === undefined ? { code: c } : { code: c, message: m };
        assert.deepEqual(decodeCause(encodeCause(cause)), cause);
      }),
    );
  });

  it('the reserve is taken off what is sent, and budgets never go below zero', () => {
    assert.equal(encodeTimeout(1000.9, 5), '995');
    assert.equal(encodeTimeout(3, 5), '0');
    assert.equal(encodeDeadline(NOW + 0.5, 5), String(NOW - 5));
  });

  it('rejects what is not one plain integer', () => {
    for (const bad of [
      '',
      ' ',
      '-5',
      '1.5',
      '1e3',
      '0x10',
      '+5',
      '5 5',
      '１２',
      'NaN',
      'Infinity',
      '123456789',
    ]) {
      assert.equal(decodeTimeout(bad), undefined, JSON.stringify(bad));
    }
    assert.equal(decodeTimeout(['100', '200']), undefined);
    assert.equal(decodeTimeout(['100']), 100);
    assert.equal(decodeTimeout(' 250 '), 250);
    assert.equal(decodeDeadline('179000000000'), undefined, 'twelve digits');
    assert.equal(decodeDeadline('17900000000000'), undefined, 'fourteen digits');
  });

  it('takes ctx-timeout over ctx-deadline for synchronous hops, and the reverse for queues', () => {
    const timeout = '1000';
    const deadline = String(NOW + 5000);
    assert.equal(inboundDeadline(timeout, deadline, {}, NOW), NOW + 1000);
    assert.equal(inboundDeadline(timeout, String(NOW + 400), { prefer: 'deadline' }, NOW), NOW + 400);
    assert.equal(inboundDeadline('junk', deadline, {}, NOW), NOW + 5000);
    assert.equal(inboundDeadline(undefined, 'junk', { prefer: 'deadline' }, NOW), undefined);
  });

  it('never grants a queue consumer more than the sender had left, whatever the clocks say', () => {
    // The receiver's clock runs 30 s behind: the absolute deadline alone would grant 30.5 s.
    assert.equal(inboundDeadline('500', String(NOW + 30_500), { prefer: 'deadline' }, NOW), NOW + 500);
    // Its clock runs ahead: expired unless the skew allowance covers the difference.
    const ahead = String(NOW - 29_500);
    assert.equal(inboundDeadline('500', ahead, { prefer: 'deadline' }, NOW), NOW - 29_500);
    assert.equal(
      inboundDeadline('500', ahead, { prefer: 'deadline', skewAllowanceMs: 30_000 }, NOW),
      NOW + 500,
    );
    assert.equal(
      inboundDeadline('500', ahead, { prefer: 'deadline', ignoreInboundDeadline: true }, NOW),
      NOW + 500,
    );
    assert.equal(
      inboundDeadline(undefined, ahead, { prefer: 'deadline', ignoreInboundDeadline: true }, NOW),
      undefined,
    );
  });

  it('decodes request ids and counts the malformed ones', () => {
    assert.equal(decodeRequestId('aZ09_-'), 'aZ09_-');
    assert.equal(decodeRequestId(' id '), 'id');
    assert.equal(decodeRequestId('a b'), undefined);
    assert.equal(decodeRequestId('x'.repeat(65)), undefined);
    assert.equal(decodeRequestId(['a', 'b']), undefined);
  });

  it('clamps inbound budgets to the configured maximum', () => {
    assert.equal(inboundDeadline('99999999', undefined, {}, NOW), NOW + 60_000);
    assert.equal(inboundDeadline('5000', undefined, { maxInboundMs: 1000 }, NOW), NOW + 1000);
    assert.equal(inboundDeadline(undefined, String(NOW + 3_600_000), {}, NOW), NOW + 60_000);
  });

  it('a deadline already past arrives as expired, not ignored', () => {
    assert.equal(inboundDeadline(undefined, String(NOW - 10), {}, NOW), NOW - 10);
    assert.equal(inboundDeadline('0', undefined, {}, NOW), NOW);
  });

  it('cause messages are sanitized on the way out and checked on the way in', () => {
    assert.equal(
      encodeCause({ code: 'error', message: 'bad "input"\r\nX-Injected: 1' }),
      'error bad _input___X-Injected: 1',
    );
    assert.deepEqual(decodeCause('deadline_exceeded'), { code: 'deadline_exceeded' });
    assert.deepEqual(decodeCause('shutdown draining pods'), { code: 'shutdown', message: 'draining pods' });
    assert.equal(decodeCause('Deadline'), undefined);
    assert.equal(decodeCause('x <script>'), undefined);
    assert.equal(decodeCause(`a ${'m'.repeat(129)}`), undefined);
    assert.equal(decodeCause(['cancelled', 'error']), undefined);
  });
});
