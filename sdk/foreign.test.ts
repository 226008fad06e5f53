import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { defaultTextMapGetter, defaultTextMapSetter } from '@opentelemetry/api';
import fc from 'fast-check';
import { collectMetrics, rejectedCounts } from '../test/support/metrics.ts';
import type { HeaderValue } from './codec.ts';
import {
  CONNECT_TIMEOUT_HEADER,
  checkForeignHeaders,
  decodeForeign,
  ENVOY_TIMEOUT_HEADER,
  encodeConnectTimeout,
  encodeGrpcTimeout,
  FOREIGN_HEADERS,
  type ForeignHeader,
  type ForeignOutboundHeader,
  foreignDeadline,
  GRPC_TIMEOUT_HEADER,
  injectForeign,
} from './foreign.ts';
import { acceptInbound } from './inbound.ts';

const points = collectMetrics();
const rejected = () => rejectedCounts(points);

/** How much each counter grew while `fn` ran. */
async function counted(fn: () => void): Promise<Record<string, number>> {
  const before = await rejected();
  fn();
  const grown: Record<string, number> = {};
  for (const [key, value] of Object.entries(await rejected())) {
    const delta = value - (before[key] ?? 0);
    if (delta !== 0) grown[key] = delta;
  }
  return grown;
}

const NOW = 1_790_000_000_000;
const CAP = 60_000;

/** Any header value a transport may hand over: arbitrary bytes as latin1 text, alone or repeated. */
const anyHeader: fc.Arbitrary<HeaderValue> = fc.oneof(
  fc.constant(undefined),
  fc.uint8Array({ maxLength: 40 }).map((bytes) => Buffer.from(bytes).toString('latin1')),
  fc.string({ unit: 'binary', maxLength: 20 }),
  fc.array(fc.string({ maxLength: 12 }), { maxLength: 3 }),
  fc.oneof(fc.integer(), fc.double(), fc.bigInt()).map(String),
  // Near misses of the grammars: digits of any length, any unit letter, signs and fractions.
  fc
    .tuple(
      fc.constantFrom('', '-', '+', ' ', '0x'),
      fc.stringMatching(/^[0-9]{0,14}$/),
      fc.constantFrom('', '.5', 'e3'),
      fc.constantFrom('', 'H', 'M', 'S', 'm', 'u', 'n', 'h', 's', 'ms', 'mm', ' m', 'µ'),
    )
    .map((parts) => parts.join('')),
);

describe('grpc-timeout', () => {
  it('reads every unit of the gRPC grammar, sub-millisecond ones rounded down', () => {
    const cases: [string, number][] = [
      ['1H', 3_600_000],
      ['2M', 120_000],
      ['3S', 3000],
      ['250m', 250],
      ['1500u', 1],
      ['999u', 0],
      ['2500000n', 2],
      ['0m', 0],
      ['99999999m', 99_999_999],
      ['00000010S', 10_000],
      [' 100m\t', 100],
    ];
    for (const [value, ms] of cases) assert.equal(decodeForeign(GRPC_TIMEOUT_HEADER, value), ms, value);
  });

  it('refuses what is not 1 to 8 digits and one unit letter, and counts why', async () => {
    const bad = [
      '',
      'm',
      '100',
      '1.5S',
      '-1S',
      '+1S',
      '1s',
      '1h',
      '1 S',
      '1SS',
      '1mS',
      '0x10m',
      '1e3m',
      '１S',
      'S1',
    ];
    const grown = await counted(() => {
      for (const value of bad) assert.equal(decodeForeign(GRPC_TIMEOUT_HEADER, value), undefined, value);
      assert.equal(decodeForeign(GRPC_TIMEOUT_HEADER, '123456789m'), undefined);
      assert.equal(decodeForeign(GRPC_TIMEOUT_HEADER, ['1S', '2S']), undefined);
    });
    assert.deepEqual(grown, {
      'grpc-timeout/malformed': bad.length,
      'grpc-timeout/too_large': 1,
      'grpc-timeout/duplicate': 1,
    });
  });

  it('encodes in milliseconds, and in a coarser unit rounded down past 8 digits', () => {
    assert.equal(encodeGrpcTimeout(1500.7), '1500m');
    assert.equal(encodeGrpcTimeout(-3), '0m');
    assert.equal(encodeGrpcTimeout(99_999_999), '99999999m');
    assert.equal(encodeGrpcTimeout(100_000_999), '100000S');
    assert.equal(encodeGrpcTimeout(Number.MAX_SAFE_INTEGER), '99999999H');
    fc.assert(
      fc.property(fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }), (ms) => {
        const decoded = decodeForeign(GRPC_TIMEOUT_HEADER, encodeGrpcTimeout(ms));
        assert.ok(decoded !== undefined && decoded <= ms, `${ms} -> ${decoded}`);
        if (ms <= 99_999_999) assert.equal(decoded, ms);
        else if (ms < 99_999_999 * 3_600_000) assert.ok(ms - decoded < 3_600_000);
      }),
    );
  });
});

describe('connect-timeout-ms', () => {
  it('reads 1 to 10 digits of milliseconds, 0 included', () => {
    assert.equal(decodeForeign(CONNECT_TIMEOUT_HEADER, '1500'), 1500);
    assert.equal(decodeForeign(CONNECT_TIMEOUT_HEADER, '0'), 0);
    assert.equal(decodeForeign(CONNECT_TIMEOUT_HEADER, '9999999999'), 9_999_999_999);
  });

  it('refuses anything else, and counts why', async () => {
    const bad = ['', '-1', '1.5', '1e3', '+5', '5 5', '10ms', '0x10', '١٢٣'];
    const grown = await counted(() => {
      for (const value of bad) assert.equal(decodeForeign(CONNECT_TIMEOUT_HEADER, value), undefined, value);
      assert.equal(decodeForeign(CONNECT_TIMEOUT_HEADER, '12345678901'), undefined);
      assert.equal(decodeForeign(CONNECT_TIMEOUT_HEADER, ['1', '2']), undefined);
    });
    assert.deepEqual(grown, {
      'connect-timeout-ms/malformed': bad.length,
      'connect-timeout-ms/too_large': 1,
      'connect-timeout-ms/duplicate': 1,
    });
  });

  it('encodes whole milliseconds, at most 10 digits', () => {
    assert.equal(encodeConnectTimeout(250.9), '250');
    assert.equal(encodeConnectTimeout(-1), '0');
    assert.equal(encodeConnectTimeout(Number.MAX_SAFE_INTEGER), '9999999999');
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 9_999_999_999 }), (ms) => {
        assert.equal(decodeForeign(CONNECT_TIMEOUT_HEADER, encodeConnectTimeout(ms)), ms);
      }),
    );
  });
});

describe('x-envoy-expected-rq-timeout-ms', () => {
  it('reads milliseconds; 0, which Envoy never sends (it means no timeout there), is refused', async () => {
    assert.equal(decodeForeign(ENVOY_TIMEOUT_HEADER, '15000'), 15_000);
    assert.equal(decodeForeign(ENVOY_TIMEOUT_HEADER, '1'), 1);
    const grown = await counted(() => {
      assert.equal(decodeForeign(ENVOY_TIMEOUT_HEADER, '0'), undefined);
      assert.equal(decodeForeign(ENVOY_TIMEOUT_HEADER, '15s'), undefined);
      assert.equal(decodeForeign(ENVOY_TIMEOUT_HEADER, '18446744073709551615'), undefined);
    });
    assert.deepEqual(grown, {
      'x-envoy-expected-rq-timeout-ms/malformed': 2,
      'x-envoy-expected-rq-timeout-ms/too_large': 1,
    });
  });
});

describe('foreignDeadline', () => {
  const read = (carrier: Record<string, HeaderValue>, headers = FOREIGN_HEADERS) =>
    foreignDeadline(carrier, defaultTextMapGetter, headers, CAP, NOW);

  it('takes each header alone', () => {
    assert.equal(read({ 'grpc-timeout': '2S' }), NOW + 2000);
    assert.equal(read({ 'connect-timeout-ms': '300' }), NOW + 300);
    assert.equal(read({ 'x-envoy-expected-rq-timeout-ms': '4000' }), NOW + 4000);
    assert.equal(read({}), undefined);
  });

  it('takes the earliest of several, skipping the invalid ones', () => {
    const all = {
      'grpc-timeout': '2S',
      'connect-timeout-ms': '300',
      'x-envoy-expected-rq-timeout-ms': '4000',
    };
    assert.equal(read(all), NOW + 300);
    assert.equal(read({ ...all, 'connect-timeout-ms': 'junk' }), NOW + 2000);
    assert.equal(read({ ...all, 'x-envoy-expected-rq-timeout-ms': '100' }), NOW + 100);
  });

  it('reads only the honoured headers', () => {
    const all = {
      'grpc-timeout': '2S',
      'connect-timeout-ms': '300',
      'x-envoy-expected-rq-timeout-ms': '4000',
    };
    assert.equal(read(all, []), undefined);
    assert.equal(read(all, [ENVOY_TIMEOUT_HEADER, GRPC_TIMEOUT_HEADER]), NOW + 2000);
  });

  it('cuts budgets to the cap and counts them', async () => {
    const grown = await counted(() => {
      assert.equal(read({ 'grpc-timeout': '2H' }), NOW + CAP);
      assert.equal(read({ 'connect-timeout-ms': '9999999999' }), NOW + CAP);
    });
    assert.deepEqual(grown, { 'grpc-timeout/clamped': 1, 'connect-timeout-ms/clamped': 1 });
  });

  it('random bytes in every header never throw and never grant more than the cap', () => {
    fc.assert(
      fc.property(anyHeader, anyHeader, anyHeader, (grpc, connect, envoy) => {
        const carrier = {
          'grpc-timeout': grpc,
          'connect-timeout-ms': connect,
          'x-envoy-expected-rq-timeout-ms': envoy,
        };
        const result = read(carrier);
        if (result === undefined) return;
        assert.ok(Number.isSafeInteger(result), `not an integer: ${result}`);
        assert.ok(result >= NOW && result <= NOW + CAP, `out of range: ${result - NOW}`);
        const each = FOREIGN_HEADERS.map((header) => read(carrier, [header])).filter(
          (at) => at !== undefined,
        );
        assert.equal(result, Math.min(...each), 'not the earliest');
      }),
      { numRuns: 5000 },
    );
  });
});

describe('acceptInbound with foreign headers', () => {
  const accept = (carrier: Record<string, string>, options = {}, transport?: number) => {
    const call = acceptInbound(carrier, defaultTextMapGetter, options, transport);
    const remaining = call.ctx.remaining();
    call.ctx.cancel();
    return remaining;
  };

  it('honours each alone, and the earliest of them and ctxflow own headers', () => {
    assert.ok(near(accept({ 'grpc-timeout': '800m' }), 800));
    assert.ok(near(accept({ 'connect-timeout-ms': '700' }), 700));
    assert.ok(near(accept({ 'x-envoy-expected-rq-timeout-ms': '600' }), 600));
    assert.ok(near(accept({ 'ctx-timeout': '500', 'connect-timeout-ms': '900' }), 500));
    assert.ok(near(accept({ 'ctx-timeout': '900', 'x-envoy-expected-rq-timeout-ms': '400' }), 400));
    assert.ok(near(accept({ 'grpc-timeout': '1S', 'connect-timeout-ms': '300' }, { budgetMs: 200 }), 200));
    assert.ok(near(accept({ 'grpc-timeout': '5S' }, { maxInboundMs: 1000 }), 1000));
    assert.ok(near(accept({ 'connect-timeout-ms': '900' }, {}, Date.now() + 300), 300));
  });

  it('ignores them at a trust boundary, or when not honoured, and does not count them there', async () => {
    const carrier = { 'connect-timeout-ms': '100', 'x-envoy-expected-rq-timeout-ms': 'junk' };
    const grown = await counted(() => {
      assert.ok(near(accept(carrier, { trustInbound: false, budgetMs: 2000 }), 2000));
      assert.ok(near(accept(carrier, { foreignHeaders: [], budgetMs: 2000 }), 2000));
      assert.ok(near(accept(carrier, { foreignHeaders: [ENVOY_TIMEOUT_HEADER], budgetMs: 2000 }), 2000));
    });
    assert.deepEqual(grown, { 'x-envoy-expected-rq-timeout-ms/malformed': 1 });
    // The transport's own deadline still counts from an untrusted caller.
    assert.ok(near(accept(carrier, { trustInbound: false }, Date.now() + 300), 300));
  });

  it('leaves the cause of a caller going away as for a client: a foreign caller is no ctxflow hop', () => {
    const call = acceptInbound({ 'connect-timeout-ms': '500' }, defaultTextMapGetter);
    assert.equal(call.callerGoneCause, 'client_disconnected');
    call.ctx.cancel();
  });
});

describe('injectForeign', () => {
  const write = (headers: readonly ForeignOutboundHeader[], carrier: Record<string, string> = {}) => {
    injectForeign(carrier, defaultTextMapGetter, defaultTextMapSetter, headers, NOW + 1000, 5, NOW);
    return carrier;
  };

  it('writes the remaining budget minus the reserve in each asked header', () => {
    assert.deepEqual(write([GRPC_TIMEOUT_HEADER, CONNECT_TIMEOUT_HEADER]), {
      'grpc-timeout': '995m',
      'connect-timeout-ms': '995',
    });
    assert.deepEqual(write([CONNECT_TIMEOUT_HEADER]), { 'connect-timeout-ms': '995' });
    const expired: Record<string, string> = {};
    injectForeign(
      expired,
      defaultTextMapGetter,
      defaultTextMapSetter,
      [GRPC_TIMEOUT_HEADER],
      NOW - 10,
      5,
      NOW,
    );
    assert.deepEqual(expired, { 'grpc-timeout': '0m' });
  });

  it('keeps a shorter timeout the caller set itself, never stretching it', () => {
    assert.deepEqual(
      write([GRPC_TIMEOUT_HEADER, CONNECT_TIMEOUT_HEADER], {
        'grpc-timeout': '0S',
        'connect-timeout-ms': '200',
      }),
      {
        'grpc-timeout': '0m',
        'connect-timeout-ms': '200',
      },
    );
    assert.deepEqual(write([GRPC_TIMEOUT_HEADER], { 'grpc-timeout': '1M' }), { 'grpc-timeout': '995m' });
    assert.deepEqual(write([CONNECT_TIMEOUT_HEADER], { 'connect-timeout-ms': 'junk' }), {
      'connect-timeout-ms': '995',
    });
  });

  it('refuses headers it cannot write, with a TypeError', () => {
    assert.throws(() => write([ENVOY_TIMEOUT_HEADER as ForeignOutboundHeader]), TypeError);
    assert.throws(
      () => checkForeignHeaders(['grpc-timeout', 'Connect-Timeout-Ms' as ForeignHeader]),
      TypeError,
    );
    checkForeignHeaders(undefined);
    checkForeignHeaders(FOREIGN_HEADERS);
  });
});

/** Within 50 ms below `ms`: what an inbound budget of `ms` has left a moment later. */
function near(remaining: number, ms: number): boolean {
  return remaining <= ms && remaining > ms - 50;
}
