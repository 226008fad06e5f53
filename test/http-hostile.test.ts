import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import express from 'express';
import fc from 'fast-check';
import { deadlines, errorHandler } from '../adapters/http/express.ts';
import { current } from '../sdk/context.ts';
import { type Listening, listen, rawRequest } from './support/http.ts';

// Hostile inbound headers: whatever arrives, the server answers, never crashes, and never
// grants more than its own budget; values it cannot read are ignored (the budget stays its own).

const BUDGET = 1_000;
const HEADERS = [
  'ctx-timeout',
  'ctx-deadline',
  'ctx-cancel-reason',
  'traceparent',
  'grpc-timeout',
  'connect-timeout-ms',
  'x-envoy-expected-rq-timeout-ms',
] as const;

let server: Listening;
let handled = 0;

before(async () => {
  const app = express();
  // The clock before the context is made: its deadline minus this is at least the budget it got,
  // however long a busy machine takes between arrival and the handler.
  app.use((_req, res, next) => {
    res.locals.arrivedAt = Date.now();
    next();
  });
  app.use(deadlines({ budgetMs: BUDGET }));
  app.get('/probe', (_req, res) => {
    handled++;
    const ctx = current();
    res.json({
      remaining: ctx.remaining(),
      budget: (ctx.deadline ?? Number.POSITIVE_INFINITY) - (res.locals.arrivedAt as number),
      cause: ctx.cause?.code ?? null,
    });
  });
  app.use(errorHandler());
  server = await listen(app);
});

after(() => server.close());

function head(lines: readonly (readonly [string, Buffer])[]): Buffer {
  const parts: Buffer[] = [Buffer.from('GET /probe HTTP/1.1\r\nhost: 127.0.0.1\r\n')];
  for (const [name, value] of lines) parts.push(Buffer.from(`${name}: `), value, Buffer.from('\r\n'));
  return Buffer.concat(parts);
}

interface Probe {
  remaining: number;
  budget: number;
}

function probeOf(text: string): Probe {
  return JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4)) as Probe;
}

function remainingOf(text: string): number {
  return probeOf(text).remaining;
}

/** The request got the service's own budget: no less (nothing was honoured), no more (nothing stretched it). */
function assertOwnBudget({ remaining, budget }: Probe): void {
  assert.ok(budget >= BUDGET && remaining <= BUDGET, `budget ${budget}, remaining ${remaining}`);
}

async function alive(): Promise<void> {
  const answer = await globalThis.fetch(`${server.url}/probe`);
  assert.equal(answer.status, 200);
  assertOwnBudget((await answer.json()) as Probe);
}

test('random bytes in ctxflow and trace headers, repeated or not: always an answer, never more than the own budget', async () => {
  const line = fc.tuple(
    fc.constantFrom(...HEADERS),
    fc.uint8Array({ maxLength: 80 }).map((bytes) => Buffer.from(bytes)),
  );
  await fc.assert(
    fc.asyncProperty(fc.array(line, { minLength: 1, maxLength: 6 }), async (lines) => {
      const answer = await rawRequest(server.port, head(lines));
      // 400: bytes the HTTP parser refuses (control characters, broken framing); 504: a readable tiny budget.
      assert.ok([200, 400, 504].includes(answer.status), `status ${answer.status}`);
      if (answer.status === 200) assert.ok(remainingOf(answer.text) <= BUDGET);
    }),
    { numRuns: 300 },
  );
  await alive();
});

test('negative, fractional, exponent, hex, padded, over-long and repeated budgets are ignored: the budget is the own', async () => {
  const digits = fc.stringMatching(/^[0-9]{1,6}$/);
  const malformedTimeout = fc.oneof(
    digits.map((d) => `-${d}`),
    fc.tuple(digits, digits).map(([a, b]) => `${a}.${b}`),
    digits.map((d) => `${d}e3`),
    digits.map((d) => `0x${d}`),
    digits.map((d) => `+${d}`),
    digits.map((d) => `${d}ms`),
    fc.stringMatching(/^[0-9]{9,40}$/),
    fc.constantFrom('', 'NaN', 'Infinity', '1 000', '١٢٣', '∞', 'null', '[]'),
    // Repeated lines arrive joined ("a, b") and are refused even when each is valid.
    fc.tuple(digits, digits).map(([a, b]) => [a, b]),
  );
  const malformedDeadline = fc.oneof(
    fc.stringMatching(/^[0-9]{1,12}$/),
    fc.stringMatching(/^[0-9]{14,30}$/),
    fc.bigInt({ min: 1n, max: 10n ** 13n }).map((n) => `-${n}`),
    fc
      .double({ noNaN: true })
      .filter((d) => !Number.isInteger(d))
      .map(String),
    fc.constant(String(Date.now() + 10)).map((d) => [d, d]),
  );
  const value = (v: string | string[]) => (Array.isArray(v) ? v : [v]);
  await fc.assert(
    fc.asyncProperty(fc.option(malformedTimeout), fc.option(malformedDeadline), async (timeout, deadline) => {
      const lines: [string, Buffer][] = [];
      for (const v of timeout === null ? [] : value(timeout)) lines.push(['ctx-timeout', Buffer.from(v)]);
      for (const v of deadline === null ? [] : value(deadline)) lines.push(['ctx-deadline', Buffer.from(v)]);
      const answer = await rawRequest(server.port, head(lines));
      assert.equal(answer.status, 200, answer.text.slice(0, 200));
      assertOwnBudget(probeOf(answer.text));
    }),
    { numRuns: 300 },
  );
  await alive();
});

test('near misses of the grpc-timeout, Connect and Envoy grammars are ignored: the budget is the own', async () => {
  const digits = fc.stringMatching(/^[0-9]{1,6}$/);
  const unit = fc.constantFrom('H', 'M', 'S', 'm', 'u', 'n');
  const grpcTimeout = fc.oneof(
    digits,
    digits.map((d) => `-${d}m`),
    fc.tuple(digits, digits, unit).map(([a, b, u]) => `${a}.${b}${u}`),
    fc
      .tuple(digits, fc.constantFrom('h', 's', 'ms', 'us', 'ns', 'mm', ' m', 'x', ''))
      .map(([d, u]) => `${d}${u}`),
    fc.tuple(fc.stringMatching(/^[0-9]{9,20}$/), unit).map(([d, u]) => `${d}${u}`),
    fc.tuple(digits, unit).map(([d, u]) => `${u}${d}`),
    fc.tuple(digits, unit).map(([d, u]) => [`${d}${u}`, `${d}${u}`]),
  );
  const millis = fc.oneof(
    digits.map((d) => `-${d}`),
    fc.tuple(digits, digits).map(([a, b]) => `${a}.${b}`),
    digits.map((d) => `${d}ms`),
    digits.map((d) => `${d}e3`),
    fc.stringMatching(/^[0-9]{11,30}$/),
    fc.constantFrom('', 'NaN', 'Infinity', '1 000', '١٢٣'),
    fc.tuple(digits, digits).map(([a, b]) => [a, b]),
  );
  const envoy = fc.oneof(millis, fc.constant('0'));
  const value = (v: string | string[]) => (Array.isArray(v) ? v : [v]);
  await fc.assert(
    fc.asyncProperty(
      fc.record({
        'grpc-timeout': fc.option(grpcTimeout),
        'connect-timeout-ms': fc.option(millis),
        'x-envoy-expected-rq-timeout-ms': fc.option(envoy),
      }),
      async (headers) => {
        const lines: [string, Buffer][] = [];
        for (const [name, v] of Object.entries(headers)) {
          for (const one of v === null ? [] : value(v)) lines.push([name, Buffer.from(one)]);
        }
        const answer = await rawRequest(server.port, head(lines));
        assert.equal(answer.status, 200, answer.text.slice(0, 200));
        assertOwnBudget(probeOf(answer.text));
      },
    ),
    { numRuns: 300 },
  );
  await alive();
});

test('huge header values: refused by the parser or ignored, the server lives on', async () => {
  const before = handled;
  for (const size of [1_000, 8_000, 20_000, 70_000]) {
    for (const name of HEADERS) {
      const answer = await rawRequest(server.port, head([[name, Buffer.alloc(size, '9')]]));
      assert.ok([200, 431, 400].includes(answer.status), `${name} ${size}: ${answer.status}`);
      if (answer.status === 200) {
        assertOwnBudget(probeOf(answer.text));
      }
    }
  }
  assert.ok(handled > before, 'values under the size limit reached the handler');
  await alive();
});
