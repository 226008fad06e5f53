/**
 * A collector that is down or hangs changes nothing for requests: they are answered as fast, the
 * export queue is bounded, nothing is thrown at the application, and shutdown() ends on time.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import { after, test } from 'node:test';
import { init } from '../init/index.ts';
import { listen } from './support/http.ts';

// A collector that accepts connections and never answers (the slow case; a dead port is the
// quick one, where the connection is refused at once).
const received: string[] = [];
const hanging = http.createServer((req) => {
  received.push(req.url ?? '');
});
await new Promise<void>((resolve) => hanging.listen(0, '127.0.0.1', resolve));
after(() => {
  hanging.closeAllConnections();
  hanging.close();
});

process.env.OTEL_BSP_SCHEDULE_DELAY = '20';
process.env.OTEL_BSP_MAX_QUEUE_SIZE = '64';
process.env.OTEL_EXPORTER_OTLP_TIMEOUT = '500';
const telemetry = init({
  serviceName: 'isolation',
  endpoint: `http://127.0.0.1:${(hanging.address() as { port: number }).port}`,
});

const failures: unknown[] = [];
process.on('unhandledRejection', (reason) => failures.push(reason));
process.on('uncaughtException', (error) => failures.push(error));

test('requests through a traced chain are answered while the collector hangs', async () => {
  const back = await listen((_req, res) => res.end('ok'));
  const front = await listen(async (_req, res) => {
    const answer = await fetch(back.url);
    res.end(await answer.text());
  });
  try {
    const latencies: number[] = [];
    for (let i = 0; i < 200; i++) {
      const started = performance.now();
      const response = await fetch(front.url, { headers: { 'ctx-timeout': '1000' } });
      assert.equal(await response.text(), 'ok');
      latencies.push(performance.now() - started);
    }
    latencies.sort((a, b) => a - b);
    const p50 = latencies[100] as number;
    // Loopback requests take about a millisecond; an export in the request path would take 500.
    assert.ok(p50 < 50, `p50 ${p50.toFixed(1)} ms`);
    assert.ok(received.length > 0, 'the SDK tried to export');
    assert.deepEqual(failures, []);
  } finally {
    await Promise.all([front.close(), back.close()]);
  }
});

test('shutdown() ends within the export timeout, without throwing', async () => {
  const started = performance.now();
  await telemetry.shutdown();
  assert.ok(performance.now() - started < 5_000);
  assert.deepEqual(failures, []);
});
