/**
 * init() with tracing on (spans kept in memory) and pg left unchanged: OpenTelemetry's pg query span
 * carries the budget the query was sent with and, when its context ended it, the cause.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace';
import { init } from '../init/index.ts';
import { ATTR_BUDGET_SENT, ATTR_CAUSE, EVENT_CONTEXT_END } from '../sdk/tracing.ts';

const exporter = new InMemorySpanExporter();
const telemetry = init({ serviceName: 'pg-otel', spanProcessors: [new SimpleSpanProcessor({ exporter })] });
after(() => telemetry.shutdown());

const { default: pg } = await import('pg');
const { background, DeadlineExceededError, withTimeout } = await import('../sdk/index.ts');
const { postgres } = await import('./support/infra.ts');
const { eventually } = await import('./support/pg.ts');

test('the pg span has the budget sent and the cause of the context that cancelled it', async (t) => {
  const url = postgres(t);
  if (url === undefined) return;
  const pool = new pg.Pool({ connectionString: url, max: 1 });
  t.after(() => pool.end());
  await pool.query('select 1 /* warm */');
  exporter.reset();
  await assert.rejects(
    withTimeout(background(), 400).run(() => pool.query('select pg_sleep(30) /* cut */')),
    DeadlineExceededError,
  );
  await pool.query('select 2 /* plain */');
  const spans = () =>
    exporter.getFinishedSpans().filter((s) => String(s.attributes['db.query.text'] ?? s.name).length > 0);
  assert.ok(
    await eventually(() => spans().some((s) => String(s.attributes['db.query.text']).includes('cut'))),
  );
  const cut = spans().find((s) => String(s.attributes['db.query.text']).includes('cut'));
  const plain = spans().find((s) => String(s.attributes['db.query.text']).includes('plain'));
  assert.ok(
    cut && plain,
    spans()
      .map((s) => s.name)
      .join(', '),
  );
  const sent = cut.attributes[ATTR_BUDGET_SENT];
  assert.ok(typeof sent === 'number' && sent > 100 && sent <= 400, `budget sent ${sent}`);
  assert.equal(cut.attributes[ATTR_CAUSE], 'deadline_exceeded');
  assert.ok(cut.events.some((e) => e.name === EVENT_CONTEXT_END));
  assert.equal(plain.attributes[ATTR_BUDGET_SENT], undefined, 'no deadline, no budget');
  assert.equal(plain.attributes[ATTR_CAUSE], undefined);
  // ctxflow's own statements (the SET of statement_timeout) make no span.
  assert.ok(!spans().some((s) => String(s.attributes['db.query.text']).includes('statement_timeout')));
});
