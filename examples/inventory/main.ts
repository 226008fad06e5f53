import { init } from 'ctxflow/init';

export const telemetry = init({ serviceName: 'inventory' });
await import('./app.ts');
