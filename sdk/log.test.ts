import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { context as otel, trace } from '@opentelemetry/api';
import pino from 'pino';
import { background, withTimeout } from './context.ts';
import { logFields } from './log.ts';

test('pino with logFields as mixin: trace id, span id and remaining budget on every line', () => {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(JSON.parse(chunk.toString()));
      done();
    },
  });
  const log = pino({ mixin: logFields }, sink);
  const spanContext = { traceId: 'a'.repeat(32), spanId: 'b'.repeat(16), traceFlags: 1 };
  const ctx = withTimeout(background(), 1000);
  ctx.run(() => otel.with(trace.setSpanContext(otel.active(), spanContext), () => log.info('inside')));
  ctx.cancel();
  log.info('outside');
  const [inside, outside] = lines;
  assert.equal(inside?.trace_id, spanContext.traceId);
  assert.equal(inside?.span_id, spanContext.spanId);
  assert.ok((inside?.budget_ms as number) > 900 && (inside?.budget_ms as number) <= 1000);
  assert.equal(outside?.trace_id, undefined);
  assert.equal(outside?.budget_ms, undefined);
});
