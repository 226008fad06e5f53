import { init } from 'ctxflow/init';

export const telemetry = init({ serviceName: 'shipping' });
await import('./app.ts');
