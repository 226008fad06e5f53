import assert from 'node:assert/strict';
import type http from 'node:http';
import { after, before, describe, test } from 'node:test';
import { fetch } from '../adapters/http/fetch.ts';
import { background, run, withTimeout } from '../sdk/context.ts';
import { DeadlineExceededError } from '../sdk/errors.ts';
import {
  breaker,
  bulkhead,
  CircuitOpenError,
  hedge,
  RetryBudget,
  retry,
  wrap,
} from '../sdk/resilience/index.ts';
import { type Listening, listen } from './support/http.ts';

/** A dependency on loopback: /fail answers 503, /ok 200, /slow?ms= after a delay; it records each request. */
interface Dependency extends Listening {
  hits: { path: string; at: number; timeout: string | undefined }[];
  failing: boolean;
  /** Requests whose caller went away before the answer. */
  abandoned: number;
}

async function dependency(): Promise<Dependency> {
  const state = { hits: [] as Dependency['hits'], failing: true, abandoned: 0 };
  const handler = (req: http.IncomingMessage, res: http.ServerResponse) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const header = req.headers['ctx-timeout'];
    state.hits.push({
      path: url.pathname,
      at: Date.now(),
      timeout: typeof header === 'string' ? header : undefined,
    });
    const answer = () => {
      res.statusCode = state.failing || url.pathname === '/fail' ? 503 : 200;
      res.end(url.pathname);
    };
    if (url.pathname === '/slow') {
      const timer = setTimeout(answer, Number(url.searchParams.get('ms')));
      res.on('close', () => {
        clearTimeout(timer);
        if (!res.writableFinished) state.abandoned++;
      });
    } else {
      answer();
    }
  };
  return Object.assign(state, await listen(handler));
}

/** Calls `url` with the ctxflow fetch; a non-2xx answer is thrown, as a user's client code would. */
async function call(url: string): Promise<string> {
  const response = await fetch(url);
  const text = await response.text();
  if (!response.ok) throw new Error(`status ${response.status}`);
  return text;
}

describe('resilience against a flaky HTTP dependency', () => {
  let dep: Dependency;
  before(async () => {
    dep = await dependency();
    // The first fetch of a process loads undici: not part of what is measured.
    await fetch(`${dep.url}/ok`).then((response) => response.text());
  });
  after(() => dep.close());

  test('retry ends within 5 ms of the caller deadline and starts no attempt past it', async () => {
    dep.failing = true;
    const policy = retry({
      maxAttempts: 1_000,
      baseMs: 4,
      maxDelayMs: 4,
      random: () => 0.5,
      budget: new RetryBudget({ percent: 0, minPerSecond: 10_000 }),
    });
    // Each figure is taken from the moment the context ended: how late its own timer fires on a
    // loaded machine is the core's business, bounded loosely here. Five runs, the median must hold.
    const stops: number[] = [];
    for (let run_ = 0; run_ < 5; run_++) {
      dep.hits = [];
      const ctx = withTimeout(background(), 150);
      const deadline = ctx.deadline as number;
      let endedAt = 0;
      ctx.onDone(() => {
        endedAt = performance.now();
      });
      // A quick failure, then an attempt that hangs: the deadline, not the backoff, ends it.
      const url = () => (dep.hits.length < 1 ? `${dep.url}/slow?ms=20` : `${dep.url}/slow?ms=10000`);
      await assert.rejects(
        run(ctx, () => policy.execute(() => call(url()))),
        DeadlineExceededError,
      );
      stops.push(performance.now() - endedAt);
      const late = Date.now() - deadline;
      assert.ok(late <= 50, `rejected ${late} ms after the deadline`);
      assert.ok(dep.hits.length >= 2, 'retried');
      for (const hit of dep.hits)
        assert.ok(hit.at < deadline, 'no attempt reaches the dependency past the deadline');
    }
    stops.sort((x, y) => x - y);
    assert.ok(
      (stops[2] as number) <= 5,
      `rejected a median ${stops[2]?.toFixed(1)} ms after the context ended`,
    );
  });

  test('a dependency failing every call sees at most the budgeted extra load', async () => {
    dep.hits = [];
    dep.failing = true;
    // A fixed clock: the window never moves, so the budget is exactly 10% of the requests plus a floor of 2.
    const budget = new RetryBudget({ percent: 0.1, minPerSecond: 0.2, windowMs: 10_000, now: () => 0 });
    const policy = retry({ maxAttempts: 5, baseMs: 1, maxDelayMs: 1, random: () => 0, budget });
    const requests = 40;
    for (let i = 0; i < requests; i++) {
      await assert.rejects(
        policy.execute(() => call(`${dep.url}/fail`)),
        /status 503/,
      );
    }
    assert.ok(dep.hits.length > requests, 'some calls were retried');
    assert.ok(
      dep.hits.length <= requests + 0.1 * requests + 2,
      `${dep.hits.length} calls for ${requests} requests`,
    );
  });

  test('the breaker opens, fails fast without calling, half-opens and closes', async () => {
    dep.hits = [];
    dep.failing = true;
    let now = 0;
    const b = breaker({ name: 'dep', minimumVolume: 5, failureRatio: 0.5, openMs: 1_000, now: () => now });
    for (let i = 0; i < 5; i++)
      await assert.rejects(
        b.execute(() => call(`${dep.url}/ok`)),
        /status 503/,
      );
    assert.equal(b.state, 'open');
    for (let i = 0; i < 20; i++)
      await assert.rejects(
        b.execute(() => call(`${dep.url}/ok`)),
        CircuitOpenError,
      );
    assert.equal(dep.hits.length, 5, 'an open breaker does not call');
    dep.failing = false;
    now += 1_000;
    assert.equal(b.state, 'half-open');
    assert.equal(await b.execute(() => call(`${dep.url}/ok`)), '/ok');
    assert.equal(b.state, 'closed');
    assert.equal(dep.hits.length, 6);
  });

  test('the breaker ignores calls that failed on the caller own deadline', async () => {
    dep.failing = false;
    const b = breaker({ minimumVolume: 3, failureRatio: 0.1 });
    for (let i = 0; i < 10; i++) {
      const ctx = withTimeout(background(), 10);
      await assert.rejects(
        run(ctx, () => b.execute(() => call(`${dep.url}/slow?ms=2000`))),
        DeadlineExceededError,
      );
    }
    assert.equal(b.state, 'closed');
  });

  test('bulkhead: waiting counts against the deadline, and what is left is what the dependency is told', async () => {
    dep.hits = [];
    dep.failing = false;
    const b = bulkhead({ limit: 1, queue: 5 });
    const holder = b.execute(() => call(`${dep.url}/slow?ms=200`));

    const short = withTimeout(background(), 50);
    const shortDeadline = short.deadline as number;
    let endedAt = 0;
    short.onDone(() => {
      endedAt = performance.now();
    });
    await assert.rejects(
      run(short, () => b.execute(() => call(`${dep.url}/ok?short`))),
      DeadlineExceededError,
    );
    const left = performance.now() - endedAt;
    assert.ok(left <= 5, `left the queue ${left.toFixed(1)} ms after its context ended`);
    assert.ok(Date.now() - shortDeadline <= 50);

    const patient = withTimeout(background(), 1_000);
    const waited = run(patient, () => b.execute(() => call(`${dep.url}/ok`)));
    await holder;
    assert.equal(await waited, '/ok');
    patient.cancel();
    assert.deepEqual(
      dep.hits.map((hit) => hit.path),
      ['/slow', '/ok'],
      'the call whose deadline passed in the queue never reached the dependency',
    );
    const told = Number.parseInt(dep.hits[1]?.timeout ?? '', 10);
    assert.ok(told < 1_000 - 100, `the dependency was told ${told} ms after a wait of about 150 ms`);
  });

  test('wrap(retry, breaker, bulkhead) passes the attempt context to the call', async () => {
    dep.hits = [];
    dep.failing = false;
    const policy = wrap(retry({ random: () => 0 }), breaker(), bulkhead({ limit: 2 }));
    const ctx = withTimeout(background(), 1_000);
    const seen = await run(ctx, () =>
      policy.execute(async (attempt) => {
        assert.notEqual(attempt, ctx);
        assert.equal(attempt.deadline, ctx.deadline);
        return call(`${dep.url}/ok`);
      }),
    );
    assert.equal(seen, '/ok');
    ctx.cancel();
  });

  test('hedge: a slow first attempt is overtaken, the loser is aborted at the dependency, the budget pays', async () => {
    dep.hits = [];
    dep.failing = false;
    dep.abandoned = 0;
    const budget = new RetryBudget({ percent: 0, minPerSecond: 0.1, windowMs: 10_000, now: () => 0 });
    const h = hedge({ idempotent: true, delayMs: 30, budget });
    const url = () => (dep.hits.length === 0 ? `${dep.url}/slow?ms=5000` : `${dep.url}/ok`);
    const started = performance.now();
    assert.equal(await h.execute(() => call(url())), '/ok');
    assert.ok(performance.now() - started < 1_000, 'the hedge answered, not the slow attempt');
    assert.deepEqual(
      dep.hits.map((hit) => hit.path),
      ['/slow', '/ok'],
    );
    while (dep.abandoned === 0) await new Promise((resolve) => setTimeout(resolve, 5));
    assert.equal(budget.balance(), 0, 'the hedged attempt came out of the retry budget');

    dep.hits = [];
    await h.execute(() => call(`${dep.url}/slow?ms=60`));
    assert.equal(dep.hits.length, 1, 'with the budget spent, no hedge');
  });
});
