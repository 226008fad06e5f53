import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type http from 'node:http';
import { describe, test } from 'node:test';
import { fetch } from '../adapters/http/fetch.ts';
import { admission, closeOnShutdown, liveness, readiness } from '../adapters/http/health.ts';
import type { Cause } from '../sdk/cause.ts';
import { current } from '../sdk/context.ts';
import { CancelledError } from '../sdk/errors.ts';
import { type Shutdown, shutdown } from '../sdk/resilience/index.ts';
import { listen } from './support/http.ts';

/** A service whose /work?ms= handler waits `ms` on its context's signal, answering 503 with the cause if it aborts. */
async function service(coordinator: Shutdown) {
  const arrived: string[] = [];
  const causes: Cause[] = [];
  const guard = admission(coordinator);
  const app = await listen((req: http.IncomingMessage, res: http.ServerResponse) => {
    guard(req, res, () => {
      arrived.push(req.url ?? '');
      const ctx = current();
      const ms = Number(new URL(req.url ?? '/', 'http://x').searchParams.get('ms'));
      const timer = setTimeout(() => res.end('done'), ms);
      ctx.signal.addEventListener('abort', () => {
        // Releasing the context at the end of a finished response aborts the signal too.
        if (res.writableEnded) return;
        clearTimeout(timer);
        const cause = (ctx.cause as Cause) ?? { code: 'unknown' };
        causes.push(cause);
        res.statusCode = 503;
        res.setHeader('ctx-cancel-reason', cause.code);
        res.end();
      });
    });
  });
  const health = await listen((req, res) =>
    (req.url === '/readyz' ? readiness(coordinator) : liveness())(req, res),
  );
  return { app, health, arrived, causes };
}

async function waitFor(condition: () => boolean): Promise<void> {
  while (!condition()) await new Promise((resolve) => setTimeout(resolve, 5));
}

describe('graceful shutdown', () => {
  test('under load: in-flight requests that can finish within the grace finish, the rest are cancelled with shutdown', async () => {
    const coordinator = shutdown({ grace: 400, settleMs: 500 });
    const { app, health, arrived, causes } = await service(coordinator);
    const events: string[] = [];
    let closed = false;
    app.server.once('close', () => {
      closed = true;
    });
    closeOnShutdown(coordinator, app.server);
    coordinator.onDrain(() => {
      events.push(`drain 1 with ${coordinator.inFlight} in flight`);
    });
    coordinator.onDrain(async (ctx) => {
      assert.ok(ctx.remaining() > 0);
      events.push('drain 2');
    });

    assert.equal((await fetch(`${health.url}/readyz`)).status, 200);
    const fast = Array.from({ length: 10 }, () => fetch(`${app.url}/work?ms=100`));
    const slow = Array.from({ length: 3 }, () => fetch(`${app.url}/work?ms=10000`));
    await waitFor(() => arrived.length === 13);
    const began = performance.now();
    const done = coordinator.begin();
    assert.equal(coordinator.state, 'draining');
    const ready = await fetch(`${health.url}/readyz`);
    assert.equal(ready.status, 503);
    assert.equal(await ready.text(), 'draining\n');
    assert.equal((await fetch(`${health.url}/livez`)).status, 200);
    await assert.rejects(fetch(`${app.url}/work?ms=1`), 'no new connection is accepted');

    for (const answer of await Promise.all(fast)) assert.equal(answer.status, 200, 'no fast request dropped');
    const slowErrors = await Promise.allSettled(slow);
    for (const outcome of slowErrors) {
      assert.equal(outcome.status, 'rejected');
      assert.ok(outcome.reason instanceof CancelledError);
      assert.equal(outcome.reason.cause.code, 'shutdown');
    }
    await done;
    const took = performance.now() - began;
    assert.ok(took >= 390 && took < 1_500, `shutdown took ${took.toFixed(0)} ms with a grace of 400`);
    assert.deepEqual(
      causes.map((cause) => cause.code),
      ['shutdown', 'shutdown', 'shutdown'],
    );
    assert.deepEqual(events, ['drain 1 with 0 in flight', 'drain 2']);
    assert.equal(coordinator.state, 'stopped');
    assert.ok(closed, 'the server closed during the drain');
    await health.close();
  });

  test('while draining, new requests are refused with 503 and cause shutdown; work via execute is refused', async () => {
    const coordinator = shutdown({ grace: 5_000 });
    const { app, health, arrived } = await service(coordinator);
    const holding = fetch(`${app.url}/work?ms=150`);
    await waitFor(() => arrived.length === 1);
    const done = coordinator.begin();
    await assert.rejects(fetch(`${app.url}/work?ms=1`), (error: unknown) => {
      assert.ok(error instanceof CancelledError);
      assert.equal(error.cause.code, 'shutdown');
      return true;
    });
    await assert.rejects(
      coordinator.execute(() => 'late'),
      { code: 'shutdown', name: 'ShuttingDownError' },
    );
    assert.equal((await holding).status, 200);
    await done;
    assert.equal(arrived.length, 1);
    await app.close();
    await health.close();
  });

  test('SIGTERM, when opted in, drains and exits 0', async () => {
    const child = spawn(process.execPath, ['test/support/shutdown-child.ts'], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.on('data', (chunk: Buffer) => {
      const first = out === '';
      out += chunk.toString();
      if (first) child.kill('SIGTERM');
    });
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
    const events = out
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line));
    assert.equal(code, 0);
    assert.deepEqual(events, [
      { ready: true },
      { refused: 'ShuttingDownError' },
      { short: 'finished' },
      { long: 'shutdown' },
      { drain: 0 },
    ]);
  });
});
