import { init } from 'ctxflow/init';

export const telemetry = init({ serviceName: 'fulfillment' });
await import('./worker.ts');
