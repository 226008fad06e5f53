/**
 * init() after the application started its own NodeSDK: that SDK keeps tracing (no duplicate
 * registration, no lost spans), and ctxflow adds deadlines, cancellation and its span attributes.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { type DiagLogger, DiagLogLevel, diag } from '@opentelemetry/api';
import { HttpInstrumentation } from '@opentelemetry/instrumentation-http';
import { UndiciInstrumentation } from '@opentelemetry/instrumentation-undici';
import { NodeSDK } from '@opentelemetry/sdk-node';
import { InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace';
import { init } from '../init/index.ts';
import { current } from '../sdk/context.ts';
import { ATTR_BUDGET_ARRIVAL } from '../sdk/tracing.ts';
import { listen } from './support/http.ts';

const problems: string[] = [];
const record = (...args: unknown[]) => problems.push(args.map(String).join(' '));
const logger: DiagLogger = { error: record, warn: record, info() {}, debug() {}, verbose() {} };
diag.setLogger(logger, DiagLogLevel.WARN);

const exporter = new InMemorySpanExporter();
const sdk = new NodeSDK({
  spanProcessors: [new SimpleSpanProcessor({ exporter })],
  instrumentations: [new HttpInstrumentation(), new UndiciInstrumentation()],
});
sdk.start();
const telemetry = init({ serviceName: 'second' });
after(async () => {
  await telemetry.shutdown();
  await sdk.shutdown();
});

test('the application’s SDK records the spans; ctxflow adds budgets and propagation', async () => {
  assert.equal(telemetry.tracing, false);
  const seen: (string | string[] | undefined)[] = [];
  const back = await listen((req, res) => {
    seen.push(req.headers['ctx-timeout']);
    res.end('ok');
  });
  let remaining = -1;
  const front = await listen(async (_req, res) => {
    remaining = current().remaining();
    res.end(await (await fetch(back.url)).text());
  });
  try {
    const response = await fetch(front.url, { headers: { 'ctx-timeout': '1000' } });
    assert.equal(await response.text(), 'ok');
    assert.ok(remaining > 0 && remaining <= 1000);
    assert.equal(typeof seen[0], 'string');
    assert.ok(Number(seen[0]) < remaining);
    const servers = exporter.getFinishedSpans().filter((span) => span.kind === 1);
    assert.equal(servers.length, 2);
    assert.ok(servers.every((span) => typeof span.attributes[ATTR_BUDGET_ARRIVAL] === 'number'));
    assert.deepEqual(problems, []);
  } finally {
    await Promise.all([front.close(), back.close()]);
  }
});
