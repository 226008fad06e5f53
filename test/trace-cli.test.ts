/**
 * `ctxflow trace <id>`: a trace exported to the real Jaeger over OTLP by three services, read back
 * by the command from Jaeger's query API, and drawn: one line per span Jaeger holds, indented under
 * its parent, with its budget and its cause.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import path from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { ROOT_CONTEXT, SpanStatusCode, trace } from '@opentelemetry/api';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { SimpleSpanProcessor, TracerProvider } from '@opentelemetry/sdk-trace';
import { ATTR_SERVICE_NAME } from '@opentelemetry/semantic-conventions';
import { type JaegerTrace, waterfallRows } from '../cli/trace.ts';
import { jaeger, waitForTrace } from './support/infra.ts';

const CLI = path.join(import.meta.dirname, '..', 'cli', 'ctxflow.ts');

test('ctxflow trace draws exactly the spans, parents, budgets and causes Jaeger holds', {
  timeout: 60_000,
}, async (t) => {
  const endpoints = jaeger(t);
  if (!endpoints) return;
  const run = randomUUID().slice(0, 8);
  const providers = ['gateway', 'orders', 'inventory'].map(
    (name) =>
      new TracerProvider({
        resource: resourceFromAttributes({ [ATTR_SERVICE_NAME]: `${name}-${run}` }),
        spanProcessors: [
          new SimpleSpanProcessor({
            exporter: new OTLPTraceExporter({ url: `${endpoints.otlpEndpoint}/v1/traces` }),
          }),
        ],
      }),
  );
  const [gateway, orders, inventory] = providers.map((p) => p.getTracer('trace-cli-test'));
  const root = gateway?.startSpan('GET /orders', { attributes: { 'ctxflow.budget_ms': 2000 } }, ROOT_CONTEXT);
  assert.ok(root && orders && inventory);
  const underRoot = trace.setSpan(ROOT_CONTEXT, root);
  const order = orders.startSpan('POST /reserve', { attributes: { 'ctxflow.budget_ms': 1500 } }, underRoot);
  const stock = inventory.startSpan(
    'inventory.Stock/Get',
    { attributes: { 'ctxflow.budget_ms': 1200 } },
    trace.setSpan(ROOT_CONTEXT, order),
  );
  stock.setAttribute('ctxflow.cause', 'deadline_exceeded');
  stock.setStatus({ code: SpanStatusCode.ERROR, message: 'deadline_exceeded' });
  stock.end();
  const audit = orders.startSpan('audit', {}, underRoot);
  audit.addEvent('ctxflow.cancel', { 'ctxflow.cause': 'upstream_cancelled' });
  audit.end();
  order.end();
  root.end();
  await Promise.all(providers.map((p) => p.shutdown()));

  const traceId = root.spanContext().traceId;
  const stored = (await waitForTrace(endpoints.url, traceId, { minSpans: 4 })) as unknown as JaegerTrace;
  const { stdout } = await promisify(execFile)(
    process.execPath,
    [CLI, 'trace', traceId, '--jaeger', endpoints.url],
    {
      timeout: 30_000,
    },
  );
  const lines = stdout.trim().split('\n');
  assert.match(lines[0] ?? '', new RegExp(`^trace ${traceId}  4 spans`));
  const drawn = lines.slice(1, 5);
  const rows = waterfallRows(stored);
  assert.deepEqual(
    rows.map((r) => [r.depth, r.operation, r.budgetMs, r.cause]),
    [
      [0, 'GET /orders', 2000, undefined],
      [1, 'POST /reserve', 1500, undefined],
      [2, 'inventory.Stock/Get', 1200, 'deadline_exceeded'],
      [1, 'audit', undefined, 'upstream_cancelled'],
    ],
  );
  for (const [i, row] of rows.entries()) {
    const line = drawn[i] ?? '';
    assert.ok(line.startsWith(`${'  '.repeat(row.depth)}${row.service} ${row.operation}`), line);
    assert.equal(line.includes(`budget ${row.budgetMs} ms`), row.budgetMs !== undefined, line);
    assert.equal(line.includes(`✗ ${row.cause}`), row.cause !== undefined, line);
  }
  // Every span Jaeger holds is drawn once, under the parent Jaeger records.
  assert.deepEqual(rows.map((r) => r.spanId).sort(), stored.spans.map((s) => s.spanID).sort());
  for (const span of stored.spans) {
    const parent = span.references?.find((r) => r.refType === 'CHILD_OF')?.spanID;
    assert.equal(rows.find((r) => r.spanId === span.spanID)?.parentId, parent);
  }
});

test('ctxflow trace without a trace id prints its usage and exits 2', async () => {
  const error = await promisify(execFile)(process.execPath, [CLI, 'trace']).catch(
    (e: { code: number; stderr: string }) => e,
  );
  assert.equal((error as { code: number }).code, 2);
  assert.match((error as { stderr: string }).stderr, /a trace id is required\nRun .ctxflow trace --help./);
});
