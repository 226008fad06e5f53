/**
 * init() pays only for the transports the application loads: until the application imports them it
 * loads neither @grpc/grpc-js nor kafkajs (nor, without tracing, OpenTelemetry's module patching),
 * and it hooks them when the application does, after init() or statically beside the module that
 * runs it, with tracing or without.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { test } from 'node:test';
import { promisify } from 'node:util';

const exec = promisify(execFile);

/** Runs a fixture (or, with `-e`, CommonJS source) in a fresh process; its last line of JSON. */
async function run(fixture: string | ['-e', string], tracing: boolean): Promise<Record<string, unknown>> {
  const what =
    typeof fixture === 'string' ? [`test/fixtures/init/${fixture}`] : ['--input-type=commonjs', ...fixture];
  const { stdout } = await exec(process.execPath, ['--conditions=ctxflow-source', ...what], {
    // Tracing exports nowhere: nothing is traced here, and the SDK packages are installed.
    env: { ...process.env, TRACING: String(tracing), OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:9' },
    timeout: 60_000,
  });
  return JSON.parse(stdout.trim().split('\n').at(-1) as string) as Record<string, unknown>;
}

for (const tracing of [false, true]) {
  test(`tracing ${tracing}: nothing of gRPC or Kafka is loaded until the application imports them, then both are hooked`, async () => {
    const seen = await run('lazy-dynamic.ts', tracing);
    // With tracing, the SDK's instrumentations are built on OpenTelemetry's module patching.
    assert.deepEqual(seen.before, tracing ? ['@opentelemetry/instrumentation'] : []);
    assert.deepEqual(seen.after, ['@grpc/grpc-js', 'kafkajs', '@opentelemetry/instrumentation']);
    assert.equal(seen.grpc, 'ctxflowRequest');
    assert.equal(seen.kafka, 'ctxflowProducer');
    assert.equal(seen.under, tracing);
  });

  test(`tracing ${tracing}: a package imported statically beside init()’s module is hooked`, async () => {
    assert.equal((await run('lazy-static.ts', tracing)).kafka, 'ctxflowProducer');
  });

  test(`tracing ${tracing}: a package required by a CommonJS application after init() is hooked`, async () => {
    const source = `require('ctxflow/init').init({ tracing: process.env.TRACING === 'true' });
const { Kafka } = require('kafkajs');
const producer = Kafka.prototype.producer;
console.log(JSON.stringify({ kafka: producer.name, under: producer.__original.__wrapped === true }));`;
    const seen = await run(['-e', source], tracing);
    assert.equal(seen.kafka, 'ctxflowProducer');
    // With tracing, on top of OpenTelemetry's kafkajs wrapper, not instead of it.
    assert.equal(seen.under, tracing);
  });
}
