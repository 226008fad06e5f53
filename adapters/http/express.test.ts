import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import express from 'express';
import type { Cause } from '../../sdk/index.ts';
import { CancelledError, type Context, current, DeadlineExceededError } from '../../sdk/index.ts';
import { type Listening, listen, sleep } from '../../test/support/http.ts';
import { contextOf, deadlines, errorHandler } from './express.ts';

interface Observed {
  ctx: Context;
  causes: Cause[];
  /** The clock just before deadlines() made the context, and just after. */
  arrivedAt: number;
  madeBy: number;
}

async function app(
  options: Parameters<typeof deadlines>[0],
  routes: (app: express.Express, observed: Observed[]) => void,
  errors: unknown[] = [],
): Promise<Listening & { observed: Observed[] }> {
  const observed: Observed[] = [];
  const a = express();
  let arrivedAt = 0;
  a.use((_req, _res, next) => {
    arrivedAt = Date.now();
    next();
  });
  a.use(deadlines(options));
  a.use((req, _res, next) => {
    const madeBy = Date.now();
    const ctx = current();
    assert.equal(contextOf(req), ctx);
    const entry: Observed = { ctx, causes: [], arrivedAt, madeBy };
    ctx.onDone((error) => entry.causes.push(error.cause));
    observed.push(entry);
    next();
  });
  routes(a, observed);
  a.use(errorHandler({ onError: (error) => errors.push(error) }));
  return { ...(await listen(a)), observed };
}

describe('deadlines()', () => {
  test('a trusted caller shortens the budget; budgetMs caps it; the cap caps both', async () => {
    const server = await app({ budgetMs: 500, maxInboundMs: 300 }, (a) => {
      a.get('/', (_req, res) => {
        res.json({ remaining: current().remaining() });
      });
    });
    try {
      const cases: [() => Record<string, string>, number][] = [
        [() => ({}), 500],
        [() => ({ 'ctx-timeout': '100' }), 100],
        [() => ({ 'ctx-timeout': '5000' }), 300],
        [() => ({ 'ctx-deadline': String(Date.now() + 200) }), 200],
      ];
      for (const [make, expected] of cases) {
        const headers = make();
        const answer = await globalThis.fetch(server.url, { headers });
        await answer.json();
        // A relative budget counts from the context's making, between the two clock readings
        // around it; an absolute deadline is the one sent, less what the request spent in transit.
        const { ctx, arrivedAt, madeBy } = server.observed.at(-1) as Observed;
        const deadline = ctx.deadline as number;
        const sent = headers['ctx-deadline'];
        const [earliest, latest] =
          sent === undefined ? [arrivedAt + expected, madeBy + expected] : [Number(sent), Number(sent)];
        assert.ok(
          deadline >= earliest && deadline <= latest,
          `${JSON.stringify(headers)}: deadline ${deadline}, expected within [${earliest}, ${latest}]`,
        );
      }
    } finally {
      await server.close();
    }
  });

  test('trustInbound: false ignores the caller deadline and reports a disconnect as client_disconnected', async () => {
    const server = await app({ budgetMs: 400, trustInbound: false }, (a) => {
      a.get('/', (_req, res) => {
        res.json({ remaining: current().remaining() });
      });
      a.get('/hang', () => {});
    });
    try {
      const answer = await globalThis.fetch(server.url, { headers: { 'ctx-timeout': '50' } });
      const { remaining } = (await answer.json()) as { remaining: number };
      assert.ok(remaining > 50 && remaining <= 400, `remaining ${remaining}`);

      const client = new AbortController();
      const pending = globalThis
        .fetch(`${server.url}/hang`, { signal: client.signal, headers: { 'ctx-timeout': '1000' } })
        .catch(() => {});
      while (server.observed.length < 2) await sleep(2);
      client.abort();
      await pending;
      const hung = server.observed[1] as Observed;
      while (!hung.ctx.done) await sleep(2);
      assert.equal(hung.ctx.cause?.code, 'client_disconnected');
    } finally {
      await server.close();
    }
  });

  test('the deadline passing first answers 504 with ctx-cancel-reason; late writes neither crash nor report', async () => {
    const errors: unknown[] = [];
    let lateWrite: Promise<void> | undefined;
    const server = await app(
      { budgetMs: 60 },
      (a) => {
        a.get('/', async (_req, res) => {
          lateWrite = sleep(150);
          await lateWrite;
          res.send('too late');
        });
      },
      errors,
    );
    try {
      const started = Date.now();
      const answer = await globalThis.fetch(server.url);
      assert.equal(answer.status, 504);
      assert.equal(answer.headers.get('ctx-cancel-reason'), 'deadline_exceeded');
      assert.equal(await answer.text(), 'deadline_exceeded');
      const elapsed = Date.now() - started;
      assert.ok(elapsed >= 55 && elapsed < 1000, `answered after ${elapsed} ms`);
      await lateWrite;
      await sleep(10);
      assert.deepEqual(errors, []);
      assert.equal(server.observed[0]?.causes[0]?.code, 'deadline_exceeded');
    } finally {
      await server.close();
    }
  });

  test('a response begun after the context ended is the 504, whichever timer fires first', async () => {
    // The handler blocks the event loop until its context is past its deadline, so no timer
    // has fired when it answers: the answer alone decides.
    const server = await app({ budgetMs: 30 }, (a) => {
      a.get('/json', (_req, res) => {
        while (!current().done) {}
        res.json({ late: true });
      });
      a.get('/stream', (_req, res) => {
        while (!current().done) {}
        res.write('late ');
        res.write('chunks');
        res.end();
      });
    });
    try {
      for (const path of ['/json', '/stream']) {
        const answer = await globalThis.fetch(`${server.url}${path}`);
        assert.equal(answer.status, 504, path);
        assert.equal(answer.headers.get('ctx-cancel-reason'), 'deadline_exceeded');
        assert.equal(await answer.text(), 'deadline_exceeded');
      }
    } finally {
      await server.close();
    }
  });

  test('a budget expired or below minBudgetMs (default 5) is shed before any handler', async () => {
    const server = await app({}, (a) => {
      a.get('/', (_req, res) => {
        res.send('ran');
      });
    });
    try {
      for (const [timeout, reason] of [
        ['0', 'deadline_exceeded'],
        ['3', 'deadline_exceeded budget below minimum'],
      ]) {
        const answer = await globalThis.fetch(server.url, { headers: { 'ctx-timeout': timeout as string } });
        assert.equal(answer.status, 504);
        assert.equal(answer.headers.get('ctx-cancel-reason'), reason);
        await answer.text();
      }
      assert.equal(server.observed.length, 0);
      const answer = await globalThis.fetch(server.url, { headers: { 'ctx-timeout': '5000' } });
      assert.equal(await answer.text(), 'ran');
    } finally {
      await server.close();
    }
  });

  test('the context is released when the response is complete, and keeps no timer', async () => {
    const server = await app({ budgetMs: 60_000 }, (a) => {
      a.get('/', (_req, res) => {
        res.send('ok');
      });
    });
    try {
      const timers = () => process.getActiveResourcesInfo().filter((kind) => kind === 'Timeout').length;
      const warm = await globalThis.fetch(server.url);
      await warm.text();
      const before = timers();
      for (let i = 0; i < 200; i++) await (await globalThis.fetch(server.url)).text();
      await sleep(5);
      assert.ok(timers() <= before + 2, `timers ${before} -> ${timers()}`);
      for (const { ctx, causes } of server.observed) {
        assert.equal(ctx.done, true);
        assert.deepEqual(causes, [{ code: 'cancelled' }]);
      }
    } finally {
      await server.close();
    }
  });
});

describe('errorHandler()', () => {
  let server: Listening & { observed: Observed[] };
  const errors: unknown[] = [];

  before(async () => {
    server = await app(
      { budgetMs: 5_000 },
      (a) => {
        a.get('/deadline', () => {
          throw new DeadlineExceededError({ code: 'deadline_exceeded', message: 'at inventory' });
        });
        a.get('/cancelled', async () => {
          throw new CancelledError({ code: 'upstream_cancelled' });
        });
        a.get('/shutdown', () => {
          throw new CancelledError({ code: 'shutdown' });
        });
        a.get('/teapot', () => {
          throw Object.assign(new Error('short and stout'), { status: 418 });
        });
        a.get('/plain', async () => {
          throw new Error('boom');
        });
        a.get('/midway', async (_req, res) => {
          res.write('partial');
          await sleep(5);
          throw new Error('after the headers');
        });
      },
      errors,
    );
  });

  after(() => server.close());

  test('a context end rethrown by a handler answers with its status and reason and ends the context with its cause', async () => {
    const cases: [string, number, string][] = [
      ['/deadline', 504, 'deadline_exceeded at inventory'],
      ['/cancelled', 499, 'upstream_cancelled'],
      ['/shutdown', 503, 'shutdown'],
    ];
    for (const [path, status, reason] of cases) {
      const answer = await globalThis.fetch(`${server.url}${path}`);
      assert.equal(answer.status, status, path);
      assert.equal(answer.headers.get('ctx-cancel-reason'), reason);
      await answer.text();
      assert.equal(server.observed.at(-1)?.causes[0]?.code, reason.split(' ')[0]);
    }
    assert.deepEqual(errors, []);
  });

  test('other errors answer their own status or 500, are reported, and end the context with cause error', async () => {
    errors.length = 0;
    for (const [path, status] of [
      ['/teapot', 418],
      ['/plain', 500],
    ] as const) {
      const answer = await globalThis.fetch(`${server.url}${path}`);
      assert.equal(answer.status, status);
      assert.equal(answer.headers.get('ctx-cancel-reason'), null);
      await answer.text();
      assert.deepEqual(server.observed.at(-1)?.causes, [{ code: 'error' }]);
    }
    assert.equal(errors.length, 2);
  });

  test('an error after the headers were sent cuts the response instead of completing it', async () => {
    await assert.rejects(async () => {
      const answer = await globalThis.fetch(`${server.url}/midway`);
      await answer.text();
    });
    assert.equal(server.observed.at(-1)?.causes[0]?.code, 'error');
  });
});
