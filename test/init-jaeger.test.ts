/**
 * End to end against the real Jaeger: HTTP (express) → gRPC → HTTP (plain node:http), and
 * HTTP → gRPC → Kafka (plain kafkajs) → consumer → HTTP, each service its own process with no
 * ctxflow code but init() (or `--import ctxflow/register`). One trace holds every hop, each hop's
 * budget on arrival below its caller's; a client that gives up shows as a cancel event with its
 * cause on the first span and as upstream_cancelled downstream.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';
import { ATTR_BUDGET_ARRIVAL, ATTR_BUDGET_SENT, ATTR_CAUSE, EVENT_CONTEXT_END } from '../sdk/tracing.ts';
import { type JaegerTrace, jaeger, waitForTrace } from './support/infra.ts';
import { createTopics, kafkaClient, uniqueTopic } from './support/kafka.ts';
import { type Service, startService } from './support/process.ts';

const FIXTURES = 'test/fixtures/init';
const run = randomBytes(3).toString('hex');
const names = { edge: `init-edge-${run}`, middle: `init-middle-${run}`, leaf: `init-leaf-${run}` };
const consumerName = `init-consumer-${run}`;
const topic = uniqueTopic('init-jaeger');
// Export quickly: the test polls Jaeger for what the three processes send.
const exportEnv = { OTEL_BSP_SCHEDULE_DELAY: '100' };

let services: Service[] = [];
let edgeUrl = '';
let leaf: Service;
let consumer: Service | undefined;

before(async () => {
  if (!process.env.JAEGER_URL || !process.env.OTEL_EXPORTER_OTLP_ENDPOINT || !process.env.KAFKA_BROKERS)
    return;
  await createTopics(kafkaClient(process.env.KAFKA_BROKERS.split(',')), [topic]);
  leaf = startService(`${FIXTURES}/leaf.ts`, { ...exportEnv, SERVICE_NAME: names.leaf });
  services.push(leaf);
  const leafPort = (await leaf.waitFor((line) => 'port' in line)).port;
  consumer = startService(
    `${FIXTURES}/consumer.ts`,
    { ...exportEnv, OTEL_SERVICE_NAME: consumerName, LEAF: `http://127.0.0.1:${leafPort}`, TOPIC: topic },
    ['--import', 'ctxflow/register'],
  );
  services.push(consumer);
  const middle = startService(
    `${FIXTURES}/middle.ts`,
    { ...exportEnv, OTEL_SERVICE_NAME: names.middle, LEAF: `http://127.0.0.1:${leafPort}`, TOPIC: topic },
    ['--import', 'ctxflow/register'],
  );
  services.push(middle);
  const middlePort = (await middle.waitFor((line) => 'port' in line)).port;
  const edge = startService(`${FIXTURES}/edge.ts`, {
    ...exportEnv,
    SERVICE_NAME: names.edge,
    MIDDLE: `127.0.0.1:${middlePort}`,
  });
  services.push(edge);
  edgeUrl = `http://127.0.0.1:${(await edge.waitFor((line) => 'port' in line)).port}`;
  // The consumer's group join takes a second or more: the Kafka test's budget must not pay for it.
  await consumer.waitFor((line) => line.joined === true, 30_000);
});

after(async () => {
  await Promise.all(services.map((service) => service.stop()));
  services = [];
});

type Span = JaegerTrace['spans'][number];

function tag(span: Span, key: string): unknown {
  return span.tags.find((t) => t.key === key)?.value;
}

function spanOf(trace: JaegerTrace, service: string, kind: string): Span | undefined {
  return trace.spans.find(
    (span) => trace.processes[span.processID]?.serviceName === service && tag(span, 'span.kind') === kind,
  );
}

function serverSpan(trace: JaegerTrace, service: string): Span | undefined {
  return spanOf(trace, service, 'server');
}

/** Polls Jaeger until `ready` holds for the trace: each process exports on its own schedule. */
async function traceWhere(traceId: string, ready: (trace: JaegerTrace) => boolean): Promise<JaegerTrace> {
  const deadline = performance.now() + 15_000;
  for (;;) {
    const found = await waitForTrace(process.env.JAEGER_URL as string, traceId, { minSpans: 3 });
    if (ready(found) || performance.now() > deadline) return found;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

function traceparent(): { traceId: string; header: string } {
  const traceId = randomBytes(16).toString('hex');
  return { traceId, header: `00-${traceId}-${randomBytes(8).toString('hex')}-01` };
}

test('one trace holds every hop, each budget on arrival below its caller’s', async (t) => {
  if (jaeger(t) === undefined) return;
  const { traceId, header } = traceparent();
  const response = await fetch(`${edgeUrl}/chain?ms=20`, {
    headers: { traceparent: header, 'ctx-timeout': '2000' },
  });
  assert.equal(response.status, 200);
  assert.deepEqual(await response.json(), { leafStatus: 200, body: 'done' });

  const found = await traceWhere(traceId, (trace) =>
    Object.values(names).every((name) => serverSpan(trace, name) !== undefined),
  );
  assert.ok(found.spans.every((span) => span.traceID === traceId));
  const arrival = Object.values(names).map((name) => {
    const span = serverSpan(found, name);
    assert.ok(span, `${name}: no server span in ${JSON.stringify(found.processes)}`);
    const budget = tag(span, ATTR_BUDGET_ARRIVAL);
    assert.equal(typeof budget, 'number', `${name}: no ${ATTR_BUDGET_ARRIVAL}`);
    return budget as number;
  });
  const [edge, middle, leafBudget] = arrival as [number, number, number];
  assert.ok(edge <= 2000, `edge arrived with ${edge} ms`);
  assert.ok(middle < edge, `middle ${middle} ms, edge ${edge} ms`);
  assert.ok(leafBudget < middle, `leaf ${leafBudget} ms, middle ${middle} ms`);
  const sent = found.spans.filter((span) => tag(span, ATTR_BUDGET_SENT) !== undefined);
  assert.ok(sent.length >= 2, `client spans with ${ATTR_BUDGET_SENT}: ${sent.length}`);
  assert.ok(found.spans.every((span) => tag(span, 'error') !== true));
});

test('a client that gives up: cancel event and cause on the first span, upstream_cancelled downstream', async (t) => {
  if (jaeger(t) === undefined) return;
  const { traceId, header } = traceparent();
  const controller = new AbortController();
  const pending = fetch(`${edgeUrl}/chain?ms=5000&trace=${traceId}`, {
    headers: { traceparent: header },
    signal: controller.signal,
  }).catch((error: unknown) => error);
  await leaf.waitFor((line) => String(line.started).includes(traceId) || line.started === '/work?ms=5000');
  controller.abort();
  assert.ok((await pending) instanceof Error);
  await leaf.waitFor((line) => line.closed === '/work?ms=5000');

  const causes = (trace: JaegerTrace) =>
    Object.values(names).map((name) => {
      const span = serverSpan(trace, name);
      const event = span?.logs.find((log) =>
        log.fields.some((f) => f.key === 'event' && f.value === EVENT_CONTEXT_END),
      );
      return event?.fields.find((f) => f.key === ATTR_CAUSE)?.value;
    });
  const found = await traceWhere(traceId, (trace) => causes(trace).every((cause) => cause !== undefined));
  assert.deepEqual(causes(found), ['client_disconnected', 'upstream_cancelled', 'upstream_cancelled']);
  const edge = serverSpan(found, names.edge) as Span;
  assert.equal(tag(edge, 'error'), true);
  assert.equal(tag(edge, ATTR_CAUSE), 'client_disconnected');
});

test('through Kafka: producer and consumer spans in the one trace, each budget on arrival below its caller’s', async (t) => {
  if (jaeger(t) === undefined || consumer === undefined) return;
  const { traceId, header } = traceparent();
  const response = await fetch(`${edgeUrl}/chain?ms=20&via=kafka`, {
    headers: { traceparent: header, 'ctx-timeout': '8000' },
  });
  assert.equal(response.status, 200);
  assert.deepEqual(await response.json(), { queued: true });
  const handled = await consumer.waitFor((line) => line.consumed !== undefined);
  assert.deepEqual({ leafStatus: handled.leafStatus, body: handled.body }, { leafStatus: 200, body: 'done' });

  // Server spans of edge, middle and leaf; the producer span in middle; the consumer span.
  const hops = (trace: JaegerTrace) => ({
    edge: serverSpan(trace, names.edge),
    middle: serverSpan(trace, names.middle),
    producer: spanOf(trace, names.middle, 'producer'),
    consumer: spanOf(trace, consumerName, 'consumer'),
    leaf: serverSpan(trace, names.leaf),
  });
  const found = await traceWhere(traceId, (trace) =>
    Object.values(hops(trace)).every((span) => span !== undefined),
  );
  assert.ok(found.spans.every((span) => span.traceID === traceId));
  const spans = hops(found);
  for (const [hop, span] of Object.entries(spans)) {
    assert.ok(span, `${hop}: no span in ${JSON.stringify(found.processes)}`);
  }
  const arrival = (hop: keyof typeof spans) => {
    const budget = tag(spans[hop] as Span, ATTR_BUDGET_ARRIVAL);
    assert.equal(typeof budget, 'number', `${hop}: no ${ATTR_BUDGET_ARRIVAL}`);
    return budget as number;
  };
  const chain = [arrival('edge'), arrival('middle'), arrival('consumer'), arrival('leaf')];
  assert.ok((chain[0] as number) <= 8000, `edge arrived with ${chain[0]} ms`);
  for (let i = 1; i < chain.length; i++) {
    assert.ok((chain[i] as number) < (chain[i - 1] as number), `budgets on arrival: ${chain.join(' > ')}`);
  }
  const sent = tag(spans.producer as Span, ATTR_BUDGET_SENT) as number;
  assert.ok(sent < arrival('middle') && sent >= arrival('consumer'), `sent ${sent}, ${chain.join(' > ')}`);
  // The consumer span is the producer span's child: the hop is one trace, not a link.
  const parent = spans.consumer?.references.find((ref) => ref.refType === 'CHILD_OF');
  assert.equal(parent?.spanID, spans.producer?.spanID);
  assert.ok(found.spans.every((span) => tag(span, 'error') !== true));
});
