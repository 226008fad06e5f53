/** init() and the environment: the OTEL_* switches that turn tracing off, ctxflow/register's variables, CommonJS. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { init, optionsFromEnv } from '../init/index.ts';
import { startService } from './support/process.ts';

for (const [name, value] of [
  ['OTEL_SDK_DISABLED', 'true'],
  ['OTEL_TRACES_EXPORTER', 'none'],
  ['CTXFLOW_TRACING', 'false'],
] as const) {
  test(`${name}=${value}: deadlines without the span SDK`, async () => {
    process.env[name] = value;
    try {
      const telemetry = init({ serviceName: 'env' });
      assert.equal(telemetry.tracing, false);
      await telemetry.shutdown();
    } finally {
      delete process.env[name];
    }
  });
}

test('ctxflow/register options from the environment', () => {
  assert.deepEqual(
    optionsFromEnv({
      CTXFLOW_HTTP_BUDGET_MS: '250',
      CTXFLOW_HTTP_TRUST_INBOUND: 'false',
      CTXFLOW_GRPC: 'false',
      CTXFLOW_CLIENTS: 'false',
      CTXFLOW_KAFKA: 'false',
    }),
    { http: { budgetMs: 250, trustInbound: false }, clients: false, grpc: false, kafka: false },
  );
  assert.deepEqual(optionsFromEnv({ CTXFLOW_GRPC_BUDGET_MS: 'soon' }), {
    http: { budgetMs: undefined, trustInbound: undefined },
    grpc: { budgetMs: undefined, trustInbound: undefined },
    kafka: { budgetMs: undefined, trustInbound: undefined, deadLetterTopic: undefined },
  });
  const { kafka } = optionsFromEnv({
    CTXFLOW_KAFKA_BUDGET_MS: '5000',
    CTXFLOW_KAFKA_TRUST_INBOUND: 'false',
    CTXFLOW_KAFKA_DEAD_LETTER_TOPIC: 'dlq.{topic}',
  });
  assert.ok(kafka);
  assert.equal(kafka.budgetMs, 5000);
  assert.equal(kafka.trustInbound, false);
  assert.equal(kafka.deadLetterTopic?.('orders'), 'dlq.orders');
  assert.equal(kafka.cancelBus, undefined, 'the cancel bus on unless turned off');
  assert.deepEqual(optionsFromEnv({ CTXFLOW_KAFKA_CANCEL_BUS: 'false' }).kafka, {
    budgetMs: undefined,
    trustInbound: undefined,
    deadLetterTopic: undefined,
    cancelBus: false,
  });
});

for (const tracing of ['false', 'true']) {
  test(`a CommonJS application (tracing ${tracing})`, async () => {
    const app = startService('test/fixtures/init/cjs-app.cjs', {
      TRACING: tracing,
      OTEL_TRACES_EXPORTER: 'console',
    });
    try {
      const { port } = await app.waitFor((line) => 'port' in line);
      const response = await fetch(`http://127.0.0.1:${port}/`, { headers: { 'ctx-timeout': '800' } });
      const remaining = Number(await response.text());
      assert.ok(remaining > 0 && remaining <= 800, `remaining ${remaining}`);
    } finally {
      await app.stop();
    }
  });
}
