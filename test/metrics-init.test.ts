/** init({ metrics: { prometheus } }): ctxflow's metrics on a real scrape endpoint of a service. */

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { anyFreePort } from '../scripts/infra/index.ts';
import { startService } from './support/process.ts';
import { parseExposition } from './support/prometheus.ts';

test('init() serves ctxflow metrics for Prometheus: budget on arrival and the deadline that ran out', async () => {
  const metricsPort = await anyFreePort();
  const service = startService('test/fixtures/metrics/service.ts', { METRICS_PORT: String(metricsPort) });
  try {
    const { port } = (await service.waitFor((line) => typeof line.port === 'number', 20_000)) as {
      port: number;
    };
    const ok = await fetch(`http://127.0.0.1:${port}/items/1`, { headers: { 'ctx-timeout': '1000' } });
    assert.equal(ok.status, 200);
    const slow = await fetch(`http://127.0.0.1:${port}/items/2?slow`, { headers: { 'ctx-timeout': '50' } });
    assert.equal(slow.status, 504);
    let families = await parseExposition(
      await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text(),
    );
    // The close of the slow response is counted a moment after the client has its answer.
    for (let i = 0; i < 50 && !families.some((f) => f.name === 'ctxflow_context_ended'); i++) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      families = await parseExposition(await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text());
    }
    const samples = (name: string) => families.find((f) => f.name === name)?.samples ?? [];
    const counts = samples('ctxflow_budget_arrival').filter(
      (s) => s.name === 'ctxflow_budget_arrival_count' && s.labels.http_route === '/items/:id',
    );
    assert.equal(
      counts.reduce((n, s) => n + s.value, 0),
      2,
    );
    const ended = samples('ctxflow_context_ended').filter(
      (s) => s.labels.ctxflow_cause === 'deadline_exceeded',
    );
    assert.deepEqual(
      ended.map((s) => [s.labels.http_route, s.labels.ctxflow_cause_source, s.value]),
      [['/items/:id', 'local', 1]],
    );
  } finally {
    await service.stop();
  }
});
