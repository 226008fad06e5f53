/**
 * 10 000 queries cancelled at every stage (waiting for a connection, queued, running on the server),
 * 20 at a time over a pool of 10: afterwards the pool is whole and idle, and the server has no
 * session of ours left running a statement, and no more sessions than the pool's size.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { pool } from '../adapters/pg/index.ts';
import { background, isContextDoneError, withTimeout } from '../sdk/index.ts';
import { postgres } from './support/infra.ts';
import { appName, eventually, psql, running } from './support/pg.ts';

const QUERIES = 10_000;
const IN_FLIGHT = 20;
const MAX = 10;

test('10 000 cancelled queries leak no connection and leave nothing running on the server', async (t) => {
  const url = postgres(t);
  if (url === undefined) return;
  const app = appName();
  const db = pool(new pg.Pool({ connectionString: url, max: MAX, application_name: app }));
  t.after(() => db.end());
  let next = 0;
  let cancelled = 0;
  let answered = 0;
  const started = performance.now();
  const worker = async () => {
    while (next < QUERIES) {
      const i = next++;
      const ctx = withTimeout(background(), 10_000);
      const query = ctx.run(() => db.query('select pg_sleep(5)'));
      // 0-7 ms: some end while waiting for a client, some before or just after the query is sent.
      await sleep(i % 8);
      ctx.cancel();
      try {
        await query;
        answered++;
      } catch (error) {
        assert.ok(isContextDoneError(error), `query ${i}: ${error}`);
        cancelled++;
      }
    }
  };
  await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
  const seconds = (performance.now() - started) / 1000;
  t.diagnostic(`${QUERIES} queries in ${seconds.toFixed(1)} s: ${cancelled} cancelled, ${answered} answered`);
  assert.equal(cancelled, QUERIES);
  assert.ok(await eventually(() => db.idleCount === db.totalCount && db.waitingCount === 0, 10_000));
  assert.ok(db.totalCount <= MAX);
  assert.ok(await eventually(async () => (await running(url, app)) === 0, 10_000), 'nothing left running');
  const [sessions] = await psql(
    url,
    `select count(*) from pg_stat_activity where application_name = '${app}'`,
  );
  assert.ok(Number(sessions) <= MAX, `${sessions} server sessions`);
  // Every pooled session still answers.
  const clients = await Promise.all(Array.from({ length: db.totalCount }, () => db.connect()));
  for (const client of clients) assert.equal((await client.query('select 1 as one')).rows[0].one, 1);
  for (const client of clients) client.release();
});
