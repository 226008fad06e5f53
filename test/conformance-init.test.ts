/**
 * The conformance suites against init(): an unchanged express app with the global fetch, and
 * unchanged grpc-js servers and clients.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { init } from '../init/index.ts';
import { BUDGET_MS, type Handler, httpConformance } from './conformance/http.ts';
import { collectMetrics } from './support/metrics.ts';

const telemetry = init({ tracing: false, http: { budgetMs: BUDGET_MS }, grpc: { budgetMs: BUDGET_MS } });
const points = collectMetrics();

// Loaded after init(), as the rule says.
const { after } = await import('node:test');
const { default: express } = await import('express');
const grpc = await import('@grpc/grpc-js');
const { listen } = await import('./support/http.ts');
const { grpcConformance } = await import('./conformance/grpc.ts');
after(() => telemetry.shutdown());

httpConformance({
  name: 'init() on an unchanged express app and the global fetch',
  serve(handler: Handler) {
    const app = express();
    app.use((req: IncomingMessage, res: ServerResponse, next: (error?: unknown) => void) => {
      handler(req, res).then(undefined, next);
    });
    return listen(app);
  },
  fetch: (url) => globalThis.fetch(url),
  points,
});

grpcConformance({
  name: 'init() on unchanged grpc-js servers and clients',
  grpc,
  server: () => new grpc.Server(),
  implementation: (impl) => impl,
  clientOptions: () => ({}),
  points,
});
