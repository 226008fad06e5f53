/**
 * ctxflow's metrics as an operator reads them: a real Prometheus scrape over HTTP (the OpenTelemetry
 * Prometheus exporter), parsed with a Prometheus text-format parser, after real requests over
 * three HTTP hops and a gRPC call.
 */
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import http from 'node:http';
import { after, before, describe, test } from 'node:test';
import { metrics } from '@opentelemetry/api';
import { PrometheusExporter } from '@opentelemetry/exporter-prometheus';
import { MeterProvider } from '@opentelemetry/sdk-metrics';
import express from 'express';
import { deadlines, errorHandler } from '../adapters/http/express.ts';
import { fetch } from '../adapters/http/fetch.ts';
import { instrumentConsumer } from '../adapters/kafka/consumer.ts';
import { cancelBus, consumer, contextOf, producer } from '../adapters/kafka/index.ts';
import { background, current, withCancel, withTimeout } from '../sdk/index.ts';
import { deferred, probeClient, ready, startProbeServer, unary } from './support/grpc.ts';
import { type Listening, listen } from './support/http.ts';
import { kafkaBrokers } from './support/infra.ts';
import { createTopics, kafkaClient, uniqueTopic } from './support/kafka.ts';
import { type Family, parseExposition, type Sample } from './support/prometheus.ts';

const exporter = new PrometheusExporter({ preventServerStart: true });
let scrapeServer: Listening;

before(async () => {
  metrics.setGlobalMeterProvider(new MeterProvider({ readers: [exporter] }));
  scrapeServer = await listen((req, res) => exporter.getMetricsRequestHandler(req, res));
});

after(async () => {
  await scrapeServer.close();
  metrics.disable();
});

/** Scrapes the endpoint over HTTP and parses it. */
async function scrape(): Promise<Family[]> {
  const answer = await globalThis.fetch(`${scrapeServer.url}/metrics`);
  assert.equal(answer.status, 200);
  return parseExposition(await answer.text());
}

/**
 * Scrapes until `ready` holds (at most 5 s): a hop records its budget sample when its response
 * closes, which can come just after the client has its answer.
 */
async function scrapeUntil(ready: (families: Family[]) => boolean): Promise<Family[]> {
  let families = await scrape();
  for (let i = 0; i < 50 && !ready(families); i++) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    families = await scrape();
  }
  return families;
}

/** The samples of the family whose name starts with `prefix`, ending with `suffix` (`_total`, `_count`...). */
function family(families: Family[], prefix: string, suffix = ''): Sample[] {
  const found = families.find((f) => f.name.startsWith(prefix));
  return (found?.samples ?? []).filter((s) => suffix === '' || s.name.endsWith(suffix));
}

function matches(sample: Sample, labels: Record<string, string>): boolean {
  return Object.entries(labels).every(([k, v]) => sample.labels[k] === v);
}

/** The sum of the values of the samples whose labels include `labels`. */
function count(samples: Sample[], labels: Record<string, string>): number {
  return samples.filter((s) => matches(s, labels)).reduce((total, s) => total + s.value, 0);
}

describe('HTTP: three hops', () => {
  const hops: Listening[] = [];
  const cStarted = new Map<string, () => void>();

  before(async () => {
    // Routes are prefixed per hop, so each hop's series are its own although one process serves all three.
    const c = express();
    // C's own 50 ms budget runs out in the slow request; the one the client abandons has the time.
    c.use('/c/gone', deadlines());
    c.use(['/c/quick', '/c/slow'], deadlines({ budgetMs: 50 }));
    c.get('/c/:mode', async (req, res) => {
      cStarted.get(req.params.mode)?.();
      if (req.params.mode === 'quick') {
        res.send('ok');
        return;
      }
      await new Promise((resolve) => current().signal.addEventListener('abort', resolve));
    });
    c.use(errorHandler());
    hops.push(await listen(c));
    const b = express();
    b.use(deadlines());
    b.get('/b/:mode', async (req, res) => {
      res.send(await (await fetch(`${hops[0]?.url}/c/${req.params.mode}`)).text());
    });
    b.use(errorHandler());
    hops.push(await listen(b));
    const a = express();
    a.use(deadlines({ budgetMs: 10_000, trustInbound: false }));
    a.get('/a/:mode', async (req, res) => {
      res.send(await (await fetch(`${hops[1]?.url}/b/${req.params.mode}`)).text());
    });
    a.use(errorHandler());
    hops.push(await listen(a));
  });

  after(() => Promise.all(hops.map((h) => h.close())));

  test('budget on arrival decreases hop by hop; exactly one deadline_exceeded where the time ran out', async () => {
    const a = hops[2] as Listening;
    assert.equal((await globalThis.fetch(`${a.url}/a/quick`)).status, 200);
    const slow = await globalThis.fetch(`${a.url}/a/slow`);
    assert.equal(slow.status, 504);
    assert.equal(slow.headers.get('ctx-cancel-reason'), 'deadline_exceeded');

    const families = await scrapeUntil((found) =>
      ['/a/:mode', '/b/:mode', '/c/:mode'].every(
        (route) => count(family(found, 'ctxflow_budget_arrival', '_count'), { http_route: route }) === 2,
      ),
    );
    const budget = (suffix: string, route: string, more: Record<string, string> = {}) =>
      count(family(families, 'ctxflow_budget_arrival', suffix), { http_route: route, ...more });
    for (const route of ['/a/:mode', '/b/:mode', '/c/:mode'])
      assert.equal(
        budget('_count', route),
        2,
        `${route}: ${JSON.stringify(family(families, 'ctxflow_budget_arrival', '_count'))}`,
      );
    const [sa, sb, sc] = ['/a/:mode', '/b/:mode', '/c/:mode'].map((route) => budget('_sum', route)) as [
      number,
      number,
      number,
    ];
    assert.ok(sa > sb && sb > sc, `budget sums ${sa} > ${sb} > ${sc}`);
    // C's own 50 ms budget: both samples in the low-end buckets, none in A's (10 s).
    assert.equal(budget('_bucket', '/c/:mode', { le: '50' }), 2);
    assert.equal(budget('_bucket', '/a/:mode', { le: '5000' }), 0);

    const ended = family(families, 'ctxflow_context_ended', '_total');
    assert.equal(
      count(ended, {
        ctxflow_transport: 'http',
        ctxflow_cause: 'deadline_exceeded',
        ctxflow_cause_source: 'local',
      }),
      1,
      JSON.stringify(ended),
    );
    assert.equal(
      count(ended, {
        http_route: '/c/:mode',
        ctxflow_cause: 'deadline_exceeded',
        ctxflow_cause_source: 'local',
      }),
      1,
    );
    for (const route of ['/a/:mode', '/b/:mode']) {
      assert.equal(
        count(ended, {
          http_route: route,
          ctxflow_cause: 'deadline_exceeded',
          ctxflow_cause_source: 'downstream',
        }),
        1,
        route,
      );
    }
  });

  test('a client that hangs up: client_disconnected at the edge, upstream_cancelled behind it', async () => {
    const before = family(await scrape(), 'ctxflow_context_ended', '_total');
    const started = deferred();
    cStarted.set('gone', started.resolve);
    const client = new AbortController();
    const pending = globalThis.fetch(`${hops[2]?.url}/a/gone`, { signal: client.signal }).catch(() => {});
    await started.promise;
    client.abort();
    await pending;
    const expected = [
      ['/a/:mode', 'client_disconnected'],
      ['/b/:mode', 'upstream_cancelled'],
      ['/c/:mode', 'upstream_cancelled'],
    ];
    // Each hop counts when its response closes: poll the scrape until all three are in.
    let ended: Sample[] = [];
    for (let i = 0; i < 50; i++) {
      ended = family(await scrape(), 'ctxflow_context_ended', '_total');
      const seen = expected.map(
        ([route, cause]) =>
          count(ended, { http_route: route as string, ctxflow_cause: cause as string }) -
          count(before, { http_route: route as string, ctxflow_cause: cause as string }),
      );
      if (seen.every((n) => n === 1)) return;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    assert.fail(`not every hop counted its cancel: ${JSON.stringify(ended)}`);
  });

  test('a request arriving below the minimum budget is shed and counted', async () => {
    const answer = await globalThis.fetch(`${hops[1]?.url}/b/quick`, { headers: { 'ctx-timeout': '1' } });
    assert.equal(answer.status, 504);
    assert.equal(
      count(family(await scrape(), 'ctxflow_request_shed', '_total'), { ctxflow_transport: 'http' }),
      1,
    );
  });
});

test('gRPC: the method is the attribute; a budget that runs out counts deadline_exceeded', async () => {
  const server = await startProbeServer(
    {
      unary: async () => {
        await new Promise((resolve) => current().signal.addEventListener('abort', resolve));
        return {};
      },
    },
    { ctxflow: { budgetMs: 30 } },
  );
  const client = probeClient(server.address);
  try {
    await ready(client);
    await unary(client).catch(() => {});
    const ended = family(await scrape(), 'ctxflow_context_ended', '_total');
    assert.equal(
      count(ended, {
        rpc_method: '/ctxflow.test.Probe/Unary',
        ctxflow_cause: 'deadline_exceeded',
        ctxflow_transport: 'grpc',
      }),
      1,
      JSON.stringify(ended),
    );
    const budget = family(await scrape(), 'ctxflow_budget_arrival', '_count');
    assert.equal(count(budget, { rpc_method: '/ctxflow.test.Probe/Unary' }), 1);
  } finally {
    client.close();
    await server.close();
  }
});

test('10,000 requests with random paths and hostile headers add no series beyond the declared routes', async () => {
  const app = express();
  app.use(deadlines());
  app.get('/items/:id', (_req, res) => {
    res.send('ok');
  });
  app.use(errorHandler());
  const server = await listen(app);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
  // Every fourth request carries a valid budget, so the declared route has series of its own.
  const hostile = (i: number) => {
    const junk = randomBytes(12).toString('base64');
    return {
      'ctx-timeout': i % 4 === 0 ? '1000' : junk,
      'ctx-deadline': `9${junk}`,
      'ctx-cancel-reason': `x ${junk}`,
      'connect-timeout-ms': junk,
    };
  };
  const one = (i: number) =>
    new Promise<void>((resolve, reject) => {
      const path =
        i % 2 === 0 ? `/items/${randomBytes(6).toString('hex')}` : `/${randomBytes(8).toString('hex')}`;
      http
        .get(`${server.url}${path}`, { agent, headers: hostile(i) }, (res) => {
          res.resume();
          res.on('end', resolve);
        })
        .on('error', reject);
    });
  try {
    let next = 0;
    await Promise.all(
      Array.from({ length: 16 }, async () => {
        while (next < 10_000) await one(next++);
      }),
    );
    const families = await scrape();
    const ours = families.filter((f) => f.name.startsWith('ctxflow_'));
    const routes = new Set(
      ours.flatMap((f) => f.samples.map((s) => s.labels.http_route)).filter((r) => r !== undefined),
    );
    assert.deepEqual(
      [...routes].filter((r) => !r.startsWith('/a/') && !r.startsWith('/b/') && !r.startsWith('/c/')),
      ['/items/:id'],
    );
    for (const f of ours) {
      for (const sample of f.samples) {
        for (const value of Object.values(sample.labels)) {
          assert.ok(
            !/[+/=]{2}|[A-Za-z0-9+/]{16}/.test(value) || value.startsWith('/'),
            `${f.name}: ${value}`,
          );
        }
      }
    }
    const rejected = family(families, 'ctxflow_inbound_rejected', '_total');
    const headers = new Set(rejected.map((s) => s.labels.header));
    for (const header of headers) {
      assert.ok(
        ['ctx-timeout', 'ctx-deadline', 'ctx-cancel-reason', 'connect-timeout-ms'].includes(header as string),
        header,
      );
    }
    assert.ok(rejected.length <= 4 * 4, `${rejected.length} rejected series`);
  } finally {
    agent.destroy();
    await server.close();
  }
});

test('Kafka: an expired message and a cancel through the bus, as the scrape shows them', async (t) => {
  const brokers = kafkaBrokers(t);
  if (brokers === undefined) return;
  const client = kafkaClient(brokers);
  const raw = client.producer();
  await raw.connect();
  t.after(() => raw.disconnect());
  const topic = uniqueTopic('metrics');
  const bus = cancelBus(client, { topic: uniqueTopic('metrics-bus') });
  t.after(() => bus.stop());
  await createTopics(client, [topic, `${topic}.dead-letter`]);
  await bus.connect();
  const send = producer(raw, { cancelBus: bus });
  // One message that expires in the queue, one whose request is cancelled while it is handled.
  const expiring = withTimeout(background(), 50);
  await expiring.run(() => send.send({ topic, messages: [{ value: 'late' }] }));
  await new Promise((resolve) => setTimeout(resolve, 150));
  const request = withCancel(background());
  await request.run(() => send.send({ topic, messages: [{ value: 'running' }] }));
  const started = deferred();
  const c = consumer(client.consumer({ groupId: `metrics-${randomUUID()}`, maxWaitTimeInMs: 100 }), {
    deadLetterProducer: raw,
    cancelBus: bus,
  });
  t.after(() => c.disconnect());
  await c.connect();
  await c.subscribe({ topic, fromBeginning: true });
  await c.run({
    eachMessage: async ({ ctx }) => {
      started.resolve();
      await new Promise((resolve) => ctx.signal.addEventListener('abort', resolve));
      throw ctx.signal.reason;
    },
  });
  await started.promise;
  request.cancel('client_disconnected');
  expiring.cancel();
  const families = await scrapeUntil(
    (found) =>
      count(family(found, 'ctxflow_kafka_messages', '_total'), { messaging_destination_name: topic }) === 2,
  );
  const messages = family(families, 'ctxflow_kafka_messages', '_total');
  assert.equal(
    count(messages, {
      messaging_destination_name: topic,
      ctxflow_kafka_outcome: 'dead-lettered',
      ctxflow_cause: 'deadline_exceeded',
    }),
    1,
  );
  assert.equal(
    count(messages, {
      messaging_destination_name: topic,
      ctxflow_kafka_outcome: 'dead-lettered',
      ctxflow_cause: 'client_disconnected',
    }),
    1,
  );
  const delay = family(families, 'ctxflow_kafka_cancel_delay', '_count');
  assert.equal(count(delay, { ctxflow_kafka_cancel_stage: 'abort' }), 1);
  assert.ok(count(delay, { ctxflow_kafka_cancel_stage: 'read' }) >= 1);
  assert.equal(
    count(family(families, 'ctxflow_budget_arrival', '_count'), {
      ctxflow_transport: 'kafka',
      messaging_destination_name: topic,
    }),
    2,
  );
});

test('Kafka under init()’s hook: an eachBatch handler outliving its deadline counts one end per message, none for the batch', async (t) => {
  const brokers = kafkaBrokers(t);
  if (brokers === undefined) return;
  const client = kafkaClient(brokers);
  const topic = uniqueTopic('metrics-batch');
  await createTopics(client, [topic]);
  const raw = client.producer();
  await raw.connect();
  t.after(() => raw.disconnect());
  // One send of two messages is one record batch: one eachBatch call.
  await raw.send({ topic, messages: [{ value: 'a' }, { value: 'b' }] });
  const unlabelled = (families: Family[]) =>
    family(families, 'ctxflow_context_ended', '_total')
      .filter((s) => s.labels.ctxflow_transport === undefined)
      .reduce((total, s) => total + s.value, 0);
  const before = unlabelled(await scrape());
  const c = instrumentConsumer(
    client.consumer({ groupId: `metrics-${randomUUID()}`, maxWaitTimeInMs: 100 }),
    { budgetMs: 200 },
    async () => raw,
  );
  t.after(() => c.disconnect());
  await c.connect();
  await c.subscribe({ topic, fromBeginning: true });
  const handled = deferred();
  await c.run({
    eachBatch: async ({ batch }) => {
      // Returns once the batch's context and each message's have ended at their deadlines.
      const ended = [current(), ...batch.messages.map((m) => contextOf(m) ?? current())];
      await Promise.all(
        ended.map(
          (ctx) => ctx.done || new Promise((resolve) => ctx.signal.addEventListener('abort', resolve)),
        ),
      );
      handled.resolve();
    },
  });
  await handled.promise;
  const families = await scrapeUntil(
    (found) =>
      count(family(found, 'ctxflow_context_ended', '_total'), { messaging_destination_name: topic }) >= 2,
  );
  const ended = family(families, 'ctxflow_context_ended', '_total');
  assert.equal(
    count(ended, {
      ctxflow_transport: 'kafka',
      messaging_destination_name: topic,
      ctxflow_cause: 'deadline_exceeded',
    }),
    2,
  );
  assert.equal(unlabelled(families) - before, 0, 'the batch handler’s own context is no call of its own');
});

test('Kafka: malformed events on the cancel bus are dropped and counted, the valid one kept', async (t) => {
  const brokers = kafkaBrokers(t);
  if (brokers === undefined) return;
  const client = kafkaClient(brokers);
  const busTopic = uniqueTopic('metrics-bus-malformed');
  await createTopics(client, [busTopic]);
  const raw = client.producer();
  await raw.connect();
  t.after(() => raw.disconnect());
  // Written by a client that is not ctxflow's: no headers, an invalid id, an invalid cause.
  await raw.send({
    topic: busTopic,
    messages: [
      { value: 'x' },
      { value: 'x', headers: { 'ctx-request-id': 'not an id!', 'ctx-cancel-reason': 'client_disconnected' } },
      { value: 'x', headers: { 'ctx-request-id': 'abcdef', 'ctx-cancel-reason': 'Not A Cause!' } },
      { value: 'x', headers: { 'ctx-request-id': 'valid-one', 'ctx-cancel-reason': 'client_disconnected' } },
    ],
  });
  const bus = cancelBus(client, { topic: busTopic });
  t.after(() => bus.stop());
  await bus.start();
  assert.deepEqual(bus.cancelled('valid-one'), { code: 'client_disconnected' });
  assert.equal(bus.cancelled('abcdef'), undefined);
  const families = await scrapeUntil(
    (found) =>
      count(family(found, 'ctxflow_kafka_cancel_dropped', '_total'), {
        messaging_destination_name: busTopic,
      }) === 3,
  );
  assert.equal(
    count(family(families, 'ctxflow_kafka_cancel_dropped', '_total'), {
      messaging_destination_name: busTopic,
    }),
    3,
  );
});
