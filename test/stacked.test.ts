/**
 * Two explicit ctxflow server layers on one request or call: an app-wide and a per-route
 * `deadlines()`, `withDeadlines` around an app with per-route `deadlines()`, `serverInterceptor`
 * with `wrapService`. Each request gets one context (the inner layer narrows it where its budget is
 * tighter), one answer at the deadline, one metric sample, and the process stays up.
 */
import assert from 'node:assert/strict';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { after, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import express from 'express';
import { contextOf as callContext, serverInterceptor, wrapService } from '../adapters/grpc/index.ts';
import { contextOf, deadlines, errorHandler } from '../adapters/http/express.ts';
import { withDeadlines } from '../adapters/http/index.ts';
import { type Listening, listen } from './support/http.ts';
import { collectMetrics } from './support/metrics.ts';
import { checkHttp, ended, enter, get, type HandlerRecord, INNER_MS, OUTER_MS } from './support/stacked.ts';
import { bind, checkGrpc, stackImplementation, stackService } from './support/stacked-grpc.ts';

const points = collectMetrics();

/** A handler answering `{ remaining }`, or with `?wait` answering again after its context's end. */
function handler(records: HandlerRecord[]) {
  return async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const record = enter(records, () => contextOf(req));
    if (!req.url?.includes('wait')) {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ remaining: record.remaining }));
      return;
    }
    await ended(record.ctx);
    await new Promise((resolve) => setImmediate(resolve));
    try {
      // What express's res.json does, by hand: status, headers, body.
      res.statusCode = 200;
      res.setHeader('content-type', 'application/json');
      res.writeHead(200);
      res.end(JSON.stringify({ late: true }));
    } catch (error) {
      record.lateError = error;
    }
    record.answeredLate = true;
  };
}

describe('HTTP: two layers on one request', () => {
  const servers: Listening[] = [];
  after(() => Promise.all(servers.map((s) => s.close())));

  test('the snippet of a user: an app-wide and a per-route deadlines() answer, the process stays up', async () => {
    const app = express();
    app.use(deadlines());
    app.get('/x', deadlines(), (_req, res) => {
      res.send('ok');
    });
    app.use(errorHandler());
    const server = await listen(app);
    servers.push(server);
    for (let i = 0; i < 3; i++) {
      const answer = await get(`${server.url}/x`);
      assert.equal(answer.status, 200);
      assert.equal(answer.body, 'ok');
    }
  });

  test('deadlines() app-wide and per route', async () => {
    const records: HandlerRecord[] = [];
    const app = express();
    app.use(deadlines({ budgetMs: OUTER_MS }));
    app.get('/inner', deadlines({ budgetMs: INNER_MS }), handler(records));
    app.get('/loose', deadlines({ budgetMs: OUTER_MS, trustInbound: false }), handler(records));
    app.use(errorHandler());
    const server = await listen(app);
    servers.push(server);
    await checkHttp(server.url, records, points);
  });

  test('withDeadlines around an app whose routes have deadlines() of their own', async () => {
    const records: HandlerRecord[] = [];
    const app = express();
    app.get('/inner', deadlines({ budgetMs: INNER_MS }), handler(records));
    app.get('/loose', deadlines({ budgetMs: OUTER_MS }), handler(records));
    app.use(errorHandler());
    const server = await listen(withDeadlines(app, { budgetMs: OUTER_MS }));
    servers.push(server);
    await checkHttp(server.url, records, points);
  });
});

describe('gRPC: serverInterceptor and wrapService on one call', () => {
  test('wrapService narrows the interceptor’s context where its budget is tighter', async () => {
    const records: HandlerRecord[] = [];
    const service = stackService('Intercepted');
    const server = new grpc.Server({ interceptors: [serverInterceptor({ budgetMs: OUTER_MS })] });
    server.addService(
      service,
      wrapService(stackImplementation(records, callContext), {
        budgetMs: (path) => (path.endsWith('/Inner') ? INNER_MS : OUTER_MS),
      }),
    );
    const address = await bind(server);
    try {
      await checkGrpc(address, 'Intercepted', records, points);
    } finally {
      server.forceShutdown();
    }
  });

  test('wrapService twice: the outer builds the context, the inner narrows it', async () => {
    const records: HandlerRecord[] = [];
    const service = stackService('Wrapped');
    const server = new grpc.Server();
    const inner = wrapService(stackImplementation(records, callContext), {
      budgetMs: (path) => (path.endsWith('/Inner') ? INNER_MS : OUTER_MS),
    });
    server.addService(service, wrapService(inner, { budgetMs: OUTER_MS }));
    const address = await bind(server);
    try {
      await checkGrpc(address, 'Wrapped', records, points);
    } finally {
      server.forceShutdown();
    }
  });
});
