/**
 * init()'s light tracing path (sdk-trace without NodeSDK) against the real Jaeger: it honours what
 * NodeSDK reads for traces. OTEL_SERVICE_NAME names the service over the service.name of
 * OTEL_RESOURCE_ATTRIBUTES, whose other attributes reach Jaeger beside those of NodeSDK's default
 * resource detectors; OTEL_TRACES_SAMPLER samples by the parent; OTEL_BSP_SCHEDULE_DELAY holds the
 * spans until shutdown flushes them.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { jaeger, waitForTrace } from './support/infra.ts';
import { startService } from './support/process.ts';

// Longer than BatchSpanProcessor's default delay (5 s): a span in Jaeger before shutdown would
// mean OTEL_BSP_SCHEDULE_DELAY was not read.
const HELD_MS = 6_500;

test('service name, resource attributes, sampler and batch delay from the environment', {
  timeout: 60_000,
}, async (t) => {
  const endpoints = jaeger(t);
  if (!endpoints) return;
  const service = `init-light-${randomBytes(3).toString('hex')}`;
  const app = startService('test/fixtures/init/light.ts', {
    OTEL_EXPORTER_OTLP_ENDPOINT: endpoints.otlpEndpoint,
    OTEL_SERVICE_NAME: service,
    OTEL_RESOURCE_ATTRIBUTES: 'service.name=overridden,deployment.environment.name=light-test',
    OTEL_TRACES_SAMPLER: 'parentbased_traceidratio',
    OTEL_TRACES_SAMPLER_ARG: '0',
    OTEL_BSP_SCHEDULE_DELAY: '600000',
  });
  let stopped = false;
  try {
    const started = await app.waitFor((line) => 'port' in line, 30_000);
    assert.equal(started.nodeSdk, false, 'NodeSDK was loaded');
    const url = `http://127.0.0.1:${started.port}/`;
    // A root request: a ratio of 0 samples nothing.
    const root = (await (await fetch(url)).json()) as { traceId: string; recording: boolean };
    assert.equal(root.recording, false);
    // A sampled parent: parent-based sampling keeps it.
    const traceId = randomBytes(16).toString('hex');
    const child = (await (
      await fetch(url, { headers: { traceparent: `00-${traceId}-${randomBytes(8).toString('hex')}-01` } })
    ).json()) as { traceId: string; recording: boolean };
    assert.deepEqual(child, { traceId, recording: true });

    await sleep(HELD_MS);
    const early = await fetch(`${endpoints.url}/api/traces/${traceId}`);
    assert.equal(early.status, 404, 'exported before shutdown: OTEL_BSP_SCHEDULE_DELAY ignored');

    await app.stop();
    stopped = true;
    const found = await waitForTrace(endpoints.url, traceId, { timeoutMs: 15_000 });
    const process = found.processes[found.spans[0]?.processID ?? ''];
    assert.equal(process?.serviceName, service);
    const tags = new Map(process?.tags.map((tag) => [tag.key, tag.value]));
    assert.equal(tags.get('deployment.environment.name'), 'light-test');
    for (const detected of ['host.name', 'process.pid', 'service.instance.id', 'os.type']) {
      assert.ok(tags.has(detected), `${detected} missing: ${[...tags.keys()].join(', ')}`);
    }
  } finally {
    if (!stopped) await app.stop();
  }
});
