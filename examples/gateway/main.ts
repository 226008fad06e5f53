// The public edge. The first thing the process does: one init() call, before express is loaded.
import { init } from 'ctxflow/init';

// Callers' deadline headers are not trusted here: every request gets this service's own budget.
export const telemetry = init({ serviceName: 'gateway', http: { budgetMs: 800, trustInbound: false } });
await import('./app.ts');
