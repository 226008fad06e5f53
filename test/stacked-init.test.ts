/**
 * init() beside the explicit adapters on the same requests, calls and messages: init() plus
 * `deadlines()` or `withDeadlines` (HTTP), plus `serverInterceptor` or `wrapService` (gRPC), plus
 * `consumer()` (Kafka). Each gives one context (narrowed by the inner layer where its budget is
 * tighter), one answer at the deadline, one metric sample per request, and the process stays up.
 */
import assert from 'node:assert/strict';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { after, describe, test } from 'node:test';
import { init } from '../init/index.ts';
import { collectMetrics } from './support/metrics.ts';
import { INNER_MS, OUTER_MS } from './support/stacked.ts';

const telemetry = init({
  tracing: false,
  http: { budgetMs: OUTER_MS },
  grpc: { budgetMs: (path) => (path === '/ctxflow.test.InitIntercepted/Inner' ? INNER_MS : OUTER_MS) },
  kafka: { budgetMs: OUTER_MS },
});
after(() => telemetry.shutdown());
const points = collectMetrics();

// Loaded after init(), as the rule says.
const { default: express } = await import('express');
const grpc = await import('@grpc/grpc-js');
const { contextOf: callContext, serverInterceptor, wrapService } = await import('../adapters/grpc/index.ts');
const { contextOf, deadlines } = await import('../adapters/http/express.ts');
const { withDeadlines } = await import('../adapters/http/index.ts');
const { consumer } = await import('../adapters/kafka/index.ts');
const { current } = await import('../sdk/index.ts');
const { listen } = await import('./support/http.ts');
const { startService } = await import('./support/process.ts');
const { checkHttp, ended, enter, get, settles, total } = await import('./support/stacked.ts');
const { bind, checkGrpc, stackImplementation, stackService } = await import('./support/stacked-grpc.ts');
const { kafkaBrokers } = await import('./support/infra.ts');
const { createTopics, kafkaClient, uniqueTopic, waitFor } = await import('./support/kafka.ts');
type HandlerRecord = import('./support/stacked.ts').HandlerRecord;

/** An unchanged express handler: `{ remaining }`, or with `?wait` res.json again after the context's end. */
function expressHandler(records: HandlerRecord[]) {
  return async (req: import('express').Request, res: import('express').Response): Promise<void> => {
    const record = enter(records, () => contextOf(req));
    if (req.query.wait === undefined) {
      res.json({ remaining: record.remaining });
      return;
    }
    await ended(record.ctx);
    await new Promise((resolve) => setImmediate(resolve));
    try {
      res.status(200).set('x-late', '1').json({ late: true });
    } catch (error) {
      record.lateError = error;
    }
    record.answeredLate = true;
  };
}

describe('HTTP under init()', () => {
  test('init() and a per-route deadlines()', async () => {
    const records: HandlerRecord[] = [];
    const app = express();
    app.get('/inner', deadlines({ budgetMs: INNER_MS }), expressHandler(records));
    app.get('/loose', deadlines({ budgetMs: OUTER_MS }), expressHandler(records));
    const server = await listen(app);
    try {
      await checkHttp(server.url, records, points);
    } finally {
      await server.close();
    }
  });

  test('init() and withDeadlines', async () => {
    const records: HandlerRecord[] = [];
    const handle = (req: IncomingMessage, res: ServerResponse) => plainHandler(records, req, res);
    const inner = withDeadlines(handle, { budgetMs: INNER_MS });
    const loose = withDeadlines(handle, { budgetMs: OUTER_MS });
    const server = await listen((req, res) => (req.url?.startsWith('/inner') ? inner : loose)(req, res));
    try {
      await checkHttp(server.url, records, points);
    } finally {
      await server.close();
    }
  });

  test('an unchanged handler answering after the 504 throws nothing into the framework', async () => {
    const errors: unknown[] = [];
    const app = express();
    app.get('/late', async (_req, res) => {
      await ended(current());
      await new Promise((resolve) => setImmediate(resolve));
      res.status(200).json({ late: true });
    });
    // What express would log (finalhandler), caught here instead.
    app.use((error: unknown, _req: unknown, _res: unknown, next: (error: unknown) => void) => {
      errors.push(error);
      next(error);
    });
    const server = await listen(app);
    const late = () => total(points, 'ctxflow.outlived', (a) => a['ctxflow.work'] === 'http.response');
    const before = await late();
    try {
      const answer = await get(`${server.url}/late`, { 'ctx-timeout': '100' });
      assert.equal(answer.status, 504);
      assert.equal(answer.reason, 'deadline_exceeded');
      await settles(late, before + 1, 'the late answer counted as outlived work');
      assert.deepEqual(errors, []);
    } finally {
      await server.close();
    }
  });
});

/** An unchanged node:http handler: `{ remaining }`, or with `?wait` writeHead and end after the context's end. */
async function plainHandler(records: HandlerRecord[], req: IncomingMessage, res: ServerResponse) {
  const record = enter(records, () => contextOf(req));
  if (!req.url?.includes('wait')) {
    res.end(JSON.stringify({ remaining: record.remaining }));
    return;
  }
  await ended(record.ctx);
  await new Promise((resolve) => setImmediate(resolve));
  try {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ late: true }));
  } catch (error) {
    record.lateError = error;
  }
  record.answeredLate = true;
}

test('a user’s service under --import ctxflow/register: stacked layers and late answers, nothing in its log', async () => {
  const service = startService(
    'test/fixtures/init/stacked-app.ts',
    { NODE_ENV: 'production', CTXFLOW_TRACING: 'false' },
    ['--import', 'ctxflow/register'],
  );
  try {
    const { port, bare } = (await service.waitFor((line) => typeof line.port === 'number')) as {
      port: number;
      bare: number;
    };
    for (let i = 0; i < 3; i++) {
      const ok = await get(`http://127.0.0.1:${port}/x`);
      assert.deepEqual([ok.status, ok.body], [200, 'ok']);
    }
    const late = await get(`http://127.0.0.1:${port}/late`);
    assert.deepEqual([late.status, late.reason], [504, 'deadline_exceeded']);
    const bareLate = await get(`http://127.0.0.1:${bare}/late`, { 'ctx-timeout': '100' });
    assert.deepEqual([bareLate.status, bareLate.reason], [504, 'deadline_exceeded']);
    // The late answers have run (each right after its 504), and the service still answers.
    const again = await get(`http://127.0.0.1:${port}/x`);
    assert.equal(again.status, 200);
    assert.equal(service.child.exitCode, null, 'the process is up');
  } finally {
    await service.stop();
  }
  assert.equal(service.stderr(), '', 'nothing in the service’s log');
});

describe('gRPC under init()', () => {
  test('init() and serverInterceptor: init’s own wrapService narrows the interceptor’s context', async () => {
    const records: HandlerRecord[] = [];
    const server = new grpc.Server({ interceptors: [serverInterceptor({ budgetMs: OUTER_MS })] });
    server.addService(stackService('InitIntercepted'), stackImplementation(records, callContext));
    const address = await bind(server);
    try {
      await checkGrpc(address, 'InitIntercepted', records, points);
    } finally {
      server.forceShutdown();
    }
  });

  test('init() and wrapService: the application’s wrapService narrows init’s context', async () => {
    const records: HandlerRecord[] = [];
    const server = new grpc.Server();
    server.addService(
      stackService('InitWrapped'),
      wrapService(stackImplementation(records, callContext), {
        budgetMs: (path) => (path.endsWith('/Inner') ? INNER_MS : OUTER_MS),
      }),
    );
    const address = await bind(server);
    try {
      await checkGrpc(address, 'InitWrapped', records, points);
    } finally {
      server.forceShutdown();
    }
  });
});

describe('Kafka under init()', () => {
  test('init() and consumer(): one context per message, the consumer’s budget, one sample', async (t) => {
    const brokers = kafkaBrokers(t);
    if (brokers === undefined) return;
    const kafka = kafkaClient(brokers);
    const topic = uniqueTopic('stacked');
    await createTopics(kafka, [topic, `${topic}.dead-letter`]);
    const dlq = kafka.producer();
    const sender = kafka.producer();
    await Promise.all([dlq.connect(), sender.connect()]);
    t.after(() => Promise.all([dlq.disconnect(), sender.disconnect()]));
    const arrivals = () =>
      total(points, 'ctxflow.budget.arrival', (a) => a['messaging.destination.name'] === topic);
    const before = await arrivals();

    const seen: { same: boolean; remaining: number; cause?: string; endedAfterMs?: number }[] = [];
    const worker = consumer(kafka.consumer({ groupId: `g-${topic}`, maxWaitTimeInMs: 100 }), {
      budgetMs: INNER_MS,
      deadLetterProducer: dlq,
    });
    await worker.connect();
    t.after(() => worker.disconnect());
    await worker.subscribe({ topic, fromBeginning: true });
    await worker.run({
      eachMessage: async ({ message, ctx }) => {
        const entry = { same: current() === ctx, remaining: ctx.remaining() } as (typeof seen)[number];
        seen.push(entry);
        if (message.value?.toString() !== 'wait') return;
        const started = Date.now();
        await ended(ctx);
        entry.cause = ctx.cause?.code;
        entry.endedAfterMs = Date.now() - started;
      },
    });
    await sender.send({ topic, messages: [{ value: 'quick' }, { value: 'wait' }] });
    await waitFor('both messages handled', () => (seen[1]?.cause !== undefined ? true : undefined), 20_000);

    for (const entry of seen) {
      assert.ok(entry.same, 'the payload’s ctx is current()');
      assert.ok(entry.remaining > 0 && entry.remaining <= INNER_MS, `remaining ${entry.remaining}`);
    }
    assert.equal(seen[1]?.cause, 'deadline_exceeded');
    assert.ok((seen[1]?.endedAfterMs as number) < OUTER_MS / 2);
    await settles(arrivals, before + 2, 'one budget-on-arrival sample per message');
  });
});
