/**
 * The PostgreSQL suite, run twice: over pools the explicit adapter equips (test/pg.test.ts) and over
 * plain pools under init() (test/pg-init.test.ts). psql, an outside peer, reads pg_stat_activity.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import type pg from 'pg';
import {
  background,
  CancelledError,
  DeadlineExceededError,
  withCancel,
  withTimeout,
} from '../../sdk/index.ts';
import { postgres } from './infra.ts';

const run = promisify(execFile);

/** Runs `sql` with psql and returns its unaligned output lines. */
export async function psql(url: string, sql: string): Promise<string[]> {
  const { stdout } = await run('psql', [url, '-AtX', '-c', sql], { timeout: 10_000 });
  return stdout.trim() === '' ? [] : stdout.trim().split('\n');
}

/** Sessions of `app` running a statement, as pg_stat_activity shows them. */
export async function running(url: string, app: string): Promise<number> {
  const [count] = await psql(
    url,
    `select count(*) from pg_stat_activity where application_name = '${app}' and state <> 'idle'`,
  );
  return Number(count);
}

/** Polls `check` until it is true, for at most `ms`. */
export async function eventually(check: () => Promise<boolean> | boolean, ms = 5_000): Promise<boolean> {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    if (await check()) return true;
    await sleep(20);
  }
  return check();
}

/** A unique application name: each test's sessions are told apart in pg_stat_activity. */
export function appName(): string {
  return `ctxflow-${randomBytes(5).toString('hex')}`;
}

type MakePool = (config: pg.PoolConfig) => pg.Pool;

/** The behaviour both ways of hooking pg must have. */
export function pgSuite(name: string, makePool: MakePool): void {
  describe(name, () => {
    const setup = (t: import('node:test').TestContext, max = 2) => {
      const url = postgres(t);
      if (url === undefined) return undefined;
      const app = appName();
      const pool = makePool({ connectionString: url, max, application_name: app });
      t.after(() => pool.end());
      return { url, app, pool };
    };
    const idle = (pool: pg.Pool) =>
      eventually(() => pool.idleCount === pool.totalCount && pool.waitingCount === 0);

    test('a pool wait ends with its context and leaves the queue', async (t) => {
      const s = setup(t, 1);
      if (!s) return;
      const held = await s.pool.connect();
      const ctx = withTimeout(background(), 100);
      await assert.rejects(
        ctx.run(() => s.pool.query('select 1')),
        (e) => e instanceof DeadlineExceededError && e.cause.code === 'deadline_exceeded',
      );
      assert.equal(s.pool.waitingCount, 0, 'the dead request left the queue');
      held.release();
      assert.ok(await idle(s.pool));
      assert.equal(s.pool.totalCount, 1);
      assert.equal((await s.pool.query('select 1 as one')).rows[0].one, 1);
    });

    test('a connect() waiting with a callback gets the error of a cancelled context', async (t) => {
      const s = setup(t, 1);
      if (!s) return;
      const held = await s.pool.connect();
      const ctx = withCancel(background());
      const got = new Promise<Error | undefined>((resolve) =>
        ctx.run(() => s.pool.connect((e) => resolve(e))),
      );
      ctx.cancel({ code: 'client_disconnected' });
      const error = await got;
      assert.ok(error instanceof CancelledError);
      assert.equal(error.cause.code, 'client_disconnected');
      held.release();
      assert.ok(await idle(s.pool));
    });

    test('a connection cut mid-query fails the query, not the process; the pool recovers', async (t) => {
      const url = postgres(t);
      if (url === undefined) return;
      // A TCP proxy in front of the server, whose connections the test cuts, as a network does.
      const target = new URL(url);
      const [serverHost, serverPort] = [target.hostname, Number(target.port)];
      const sockets = new Set<net.Socket>();
      const proxy = net.createServer((client) => {
        const server = net.connect(serverPort, serverHost);
        for (const socket of [client, server]) {
          sockets.add(socket);
          socket.on('error', () => {});
        }
        client.pipe(server).pipe(client);
      });
      await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
      target.host = `127.0.0.1:${(proxy.address() as net.AddressInfo).port}`;
      const app = appName();
      const pool = makePool({ connectionString: target.toString(), max: 1, application_name: app });
      // The pool first: the proxy closes once its connections have.
      t.after(async () => {
        await pool.end();
        await new Promise<void>((resolve) => proxy.close(() => resolve()));
      });
      const ctx = withTimeout(background(), 10_000);
      const failed = ctx
        .run(() => pool.query('select pg_sleep(30)'))
        .then(
          () => undefined,
          (error: unknown) => error,
        );
      assert.ok(await eventually(async () => (await running(url, app)) === 1), 'the query runs');
      for (const socket of sockets) socket.destroy();
      sockets.clear();
      const error = await failed;
      assert.ok(error instanceof Error && !(error instanceof DeadlineExceededError), String(error));
      ctx.cancel();
      assert.equal((await pool.query('select 1 as one')).rows[0].one, 1, 'a new connection serves');
    });

    test('a running query is cancelled on the server when its deadline passes; the connection comes back usable', async (t) => {
      const s = setup(t, 1);
      if (!s) return;
      const before = await s.pool.query('select pg_backend_pid() as pid');
      const ctx = withTimeout(background(), 200);
      const started = performance.now();
      await assert.rejects(
        ctx.run(() => s.pool.query('select pg_sleep(30)')),
        DeadlineExceededError,
      );
      assert.ok(performance.now() - started < 5_000);
      assert.ok(
        await eventually(async () => (await running(s.url, s.app)) === 0),
        'gone from pg_stat_activity',
      );
      assert.ok(await idle(s.pool));
      const after = await s.pool.query('select pg_backend_pid() as pid');
      assert.equal(after.rows[0].pid, before.rows[0].pid, 'the same session, reused');
    });

    test('a cancel with a cause rejects with that cause and stops the statement', async (t) => {
      const s = setup(t);
      if (!s) return;
      const ctx = withCancel(background());
      const query = ctx.run(() => s.pool.query('select pg_sleep(30)'));
      assert.ok(await eventually(async () => (await running(s.url, s.app)) === 1), 'the query runs');
      ctx.cancel({ code: 'client_disconnected', message: 'gone' });
      await assert.rejects(
        query,
        (e) => e instanceof CancelledError && e.cause.code === 'client_disconnected',
      );
      assert.ok(await eventually(async () => (await running(s.url, s.app)) === 0));
      assert.ok(await idle(s.pool));
    });

    test('the remaining budget is the statement_timeout; none without a deadline', async (t) => {
      const s = setup(t, 1);
      if (!s) return;
      const timeout = async () =>
        Number(
          (await s.pool.query("select setting from pg_settings where name = 'statement_timeout'")).rows[0]
            .setting,
        );
      assert.equal(await timeout(), 0);
      const ms = await withTimeout(background(), 3_000).run(timeout);
      assert.ok(ms >= 2_000 && ms <= 3_500, `statement_timeout ${ms}`);
      assert.equal(await timeout(), 0);
      const huge = await withTimeout(background(), 1e15).run(timeout);
      assert.equal(huge, 2_147_483_647, 'capped');
      const ctx = withTimeout(background(), 150);
      // The server stops on its own: the cancel is the first line, this the second.
      await assert.rejects(
        ctx.run(() => s.pool.query('select pg_sleep(30)')),
        DeadlineExceededError,
      );
    });

    test('a context that has ended sends nothing and takes no connection', async (t) => {
      const s = setup(t);
      if (!s) return;
      for (const ms of [0, -5, Number.NEGATIVE_INFINITY]) {
        const ctx = withTimeout(background(), ms);
        await assert.rejects(
          ctx.run(() => s.pool.query('select 1')),
          DeadlineExceededError,
        );
        await assert.rejects(
          ctx.run(() => s.pool.connect()),
          DeadlineExceededError,
        );
      }
      assert.equal(s.pool.totalCount, 0);
    });

    test('a context ended between checkout and query: refused, and the client goes back', async (t) => {
      const s = setup(t, 1);
      if (!s) return;
      const ctx = withCancel(background());
      const client = await ctx.run(() => s.pool.connect());
      ctx.cancel();
      await assert.rejects(
        ctx.run(() => client.query('select 1')),
        CancelledError,
      );
      client.release();
      assert.ok(await idle(s.pool));
      assert.equal(s.pool.totalCount, 1);
    });

    test('a context ending inside a transaction rolls it back; the pool gets the client outside any', async (t) => {
      const s = setup(t, 1);
      if (!s) return;
      const table = `t_${randomBytes(4).toString('hex')}`;
      await s.pool.query(`create table ${table} (id int)`);
      t.after(() => psql(s.url, `drop table if exists ${table}`));
      // Idle in the transaction when the context ends: rolled back at once, further queries refused.
      const a = withCancel(background());
      const first = await a.run(() => s.pool.connect());
      await a.run(async () => {
        await first.query('begin');
        await first.query(`insert into ${table} values (1)`);
      });
      a.cancel({ code: 'shutdown' });
      await assert.rejects(
        background().run(() => first.query(`insert into ${table} values (2)`)),
        (e) => e instanceof CancelledError && e.cause.code === 'shutdown',
      );
      first.release();
      // Inside a query in the transaction: cancelled, then rolled back before the pool gets it.
      const b = withTimeout(background(), 300);
      const second = await b.run(() => s.pool.connect());
      await assert.rejects(
        b.run(async () => {
          await second.query('begin');
          await second.query(`insert into ${table} values (3)`);
          await second.query('select pg_sleep(30)');
        }),
        DeadlineExceededError,
      );
      second.release();
      assert.ok(await idle(s.pool));
      const state = await s.pool.query(
        `select (select count(*) from ${table})::int as rows, txid_current_if_assigned() as tx`,
      );
      assert.deepEqual(state.rows[0], { rows: 0, tx: null });
      assert.equal(s.pool.totalCount, 1);
    });

    test('a standalone client: its query is cancelled on the server too', async (t) => {
      const url = postgres(t);
      if (url === undefined) return;
      const app = appName();
      const pool = makePool({ connectionString: url, max: 1, application_name: app });
      t.after(() => pool.end());
      const client = await pool.connect();
      const ctx = withTimeout(background(), 150);
      await assert.rejects(
        ctx.run(() => client.query('select pg_sleep(30)')),
        DeadlineExceededError,
      );
      assert.ok(await eventually(async () => (await running(url, app)) === 0));
      assert.equal((await client.query('select 2 as two')).rows[0].two, 2);
      client.release();
    });
  });
}
