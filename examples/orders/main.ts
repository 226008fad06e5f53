import { init } from 'ctxflow/init';

export const telemetry = init({ serviceName: 'orders' });
await import('./app.ts');
