/** The PostgreSQL suite over plain pg pools of an unchanged service, under init() with tracing off. */
import { after } from 'node:test';
import { init } from '../init/index.ts';

const telemetry = init({ tracing: false });
after(() => telemetry.shutdown());

const { default: pg } = await import('pg');
const { pgSuite } = await import('./support/pg.ts');

pgSuite('init() with pg unchanged', (config) => new pg.Pool(config));
