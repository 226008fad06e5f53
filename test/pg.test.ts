/** The PostgreSQL suite over pools the explicit adapter (ctxflow/pg) equips. */
import pg from 'pg';
import { pool } from '../adapters/pg/index.ts';
import { pgSuite } from './support/pg.ts';

pgSuite('ctxflow/pg', (config) => pool(new pg.Pool(config)));
