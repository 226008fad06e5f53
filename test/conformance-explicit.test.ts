/**
 * The conformance suites against the explicit adapters: express with `deadlines()` and
 * `ctxflow/fetch`; grpc-js with `wrapService()` and `clientOptions()`.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import * as grpc from '@grpc/grpc-js';
import express from 'express';
import { clientOptions, wrapService } from '../adapters/grpc/index.ts';
import { deadlines, errorHandler } from '../adapters/http/express.ts';
import { fetch } from '../adapters/http/fetch.ts';
import { grpcConformance } from './conformance/grpc.ts';
import { BUDGET_MS, type Handler, httpConformance } from './conformance/http.ts';
import { listen } from './support/http.ts';
import { collectMetrics } from './support/metrics.ts';

const points = collectMetrics();

httpConformance({
  name: 'deadlines() and ctxflow/fetch',
  serve(handler: Handler) {
    const app = express();
    app.use(deadlines({ budgetMs: BUDGET_MS }));
    app.use((req: IncomingMessage, res: ServerResponse, next: (error?: unknown) => void) => {
      handler(req, res).then(undefined, next);
    });
    app.use(errorHandler());
    return listen(app);
  },
  fetch: (url) => fetch(url),
  points,
});

grpcConformance({
  name: 'wrapService() and clientOptions()',
  grpc,
  server: () => new grpc.Server(),
  implementation: (impl, budgetMs) => wrapService(impl, { budgetMs }),
  clientOptions: () => clientOptions(),
  points,
});
