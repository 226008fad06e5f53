/**
 * `npm run demo`, run non-interactively against the test's Kafka and Jaeger: the outcomes and causes
 * it prints are those of each scenario, and each printed table and waterfall is exactly what
 * Jaeger's query API returns for that trace.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { fetchTrace, type Hop, hopsOf, renderHops, waterfallRows } from '../cli/trace.ts';
import { jaeger, kafkaBrokers } from './support/infra.ts';

interface Printed {
  title: string;
  table: string[];
  traceId: string;
  waterfall: string[];
}

/** The demo's output, cut into its four scenarios. */
function scenarios(stdout: string): Printed[] {
  const blocks = stdout.split(/\n(?=\d\. )/).slice(1);
  return blocks.map((block) => {
    const lines = block.split('\n').map((line) => line.replace(/^ {2}/, ''));
    const start = lines.findIndex((line) => line.startsWith('hop '));
    const end = lines.indexOf('', start);
    const header = lines.findIndex((line) => line.startsWith('trace '));
    const traceId = /^trace ([0-9a-f]{32})/.exec(lines[header] ?? '')?.[1] ?? '';
    const stop = lines.findIndex((line, i) => i > header && (line === '' || !line.includes('│')));
    return {
      title: lines[0] ?? '',
      table: lines.slice(start, end),
      traceId,
      waterfall: lines.slice(header + 1, stop === -1 ? undefined : stop),
    };
  });
}

const by = (hops: Hop[], service: string) => hops.filter((h) => h.service === service);

test('the demo: four scenarios with the expected outcomes, each drawn as Jaeger holds it', {
  timeout: 300_000,
}, async (t) => {
  const brokers = kafkaBrokers(t);
  const endpoints = jaeger(t);
  if (!brokers || !endpoints) return;
  const { stdout } = await promisify(execFile)(
    process.execPath,
    ['--conditions=ctxflow-source', 'examples/demo.ts'],
    {
      env: { ...process.env, NO_COLOR: '1' },
      timeout: 240_000,
      maxBuffer: 16 << 20,
    },
  );
  const printed = scenarios(stdout);
  assert.equal(printed.length, 4, stdout);
  const hops: Hop[][] = [];
  for (const scenario of printed) {
    assert.match(scenario.traceId, /^[0-9a-f]{32}$/, `${scenario.title}\n${stdout}`);
    const trace = await fetchTrace(endpoints.url, scenario.traceId);
    // The table printed is the table of the trace Jaeger holds.
    const fromJaeger = hopsOf(trace);
    assert.deepEqual(scenario.table, renderHops(fromJaeger), scenario.title);
    hops.push(fromJaeger);
    // The waterfall: one line per span Jaeger holds, indented under its parent, with its cause.
    const rows = waterfallRows(trace);
    assert.equal(
      scenario.waterfall.length,
      rows.length,
      `${scenario.title}\n${scenario.waterfall.join('\n')}`,
    );
    for (const [i, row] of rows.entries()) {
      const line = scenario.waterfall[i] ?? '';
      assert.ok(line.startsWith(`${'  '.repeat(row.depth)}${row.service} ${row.operation}`), line);
      assert.equal(line.includes(`✗ ${row.cause}`), row.cause !== undefined, line);
    }
  }
  const [quick, slow, gone, queued] = hops as [Hop[], Hop[], Hop[], Hop[]];

  // 1. Every hop answered, and each had less than the hop before it.
  const budget = (list: Hop[], service: string) => by(list, service)[0]?.budgetMs ?? Number.NaN;
  for (const hop of quick) assert.equal(hop.cause, undefined, JSON.stringify(hop));
  assert.ok(budget(quick, 'gateway') > budget(quick, 'orders'));
  assert.ok(budget(quick, 'orders') > budget(quick, 'inventory'));
  assert.ok(budget(quick, 'orders') > budget(quick, 'fulfillment'));
  assert.ok(budget(quick, 'fulfillment') > budget(quick, 'shipping'));

  // 2. Inventory ran out of time; orders and the gateway passed its end on; nothing was queued.
  // The gateway's client waits, so the gateway answers 504 with the deadline as its cause. Behind
  // it, each hop's deadline falls the reserve (5 ms) before its caller's, counted from when the hop
  // read the call: on a loaded machine a hop that reads it late, or runs its timer late, is ended
  // by its caller's deadline first. Its cause is then `upstream_cancelled` (its caller gave up
  // before its own deadline) or still `deadline_exceeded` (within a few ms of it), and it may end
  // unanswered. Every hop ended, by the deadline or by its caller passing it on.
  assert.deepEqual(
    slow.map((h) => h.service),
    ['gateway', 'orders', 'inventory'],
  );
  const [edge, ...behind] = slow as [Hop, ...Hop[]];
  assert.deepEqual([edge.outcome, edge.cause], ['504', 'deadline_exceeded']);
  for (const hop of behind) {
    assert.ok(
      hop.cause === 'deadline_exceeded' || hop.cause === 'upstream_cancelled',
      `${hop.service}: ${JSON.stringify(hop)}`,
    );
    assert.ok(
      ['504', 'no answer', 'DEADLINE_EXCEEDED', 'CANCELLED'].includes(hop.outcome),
      `${hop.service}: ${JSON.stringify(hop)}`,
    );
  }

  // 3. The client gave up: every hop, the Kafka worker and the call it made included, was cancelled.
  assert.equal(by(gone, 'gateway')[0]?.cause, 'client_disconnected');
  for (const service of ['orders', 'fulfillment', 'shipping']) {
    assert.equal(by(gone, service)[0]?.cause, 'upstream_cancelled', service);
  }
  assert.deepEqual(
    by(gone, 'inventory').map((h) => h.cause),
    [undefined, 'upstream_cancelled'],
  );

  // 4. The message outlived its deadline in the queue: dead-lettered with its cause, never shipped.
  assert.deepEqual(
    by(queued, 'fulfillment').map((h) => [h.outcome, h.cause]),
    [['dead-lettered', 'deadline_exceeded']],
  );
  assert.deepEqual(by(queued, 'shipping'), []);
});
