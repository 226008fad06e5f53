/**
 * Soak under cancellation churn: one gRPC connection on loopback carrying 300 calls per second
 * that end early (half cancelled by their caller after 5-80 ms, half past a 20-59 ms deadline;
 * each one RST_STREAM) and 100 normal calls per second that must all succeed, for
 * CTXFLOW_SOAK_SECONDS (default 30) after 5 s of warm-up. The server has `resetGuard()`: with
 * Node's default guard the connection is closed every few seconds at this rate (see
 * docs/grpc.md) and the calls in flight on it fail.
 */
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import * as grpc from '@grpc/grpc-js';
import {
  background,
  type Context,
  current,
  isContextDoneError,
  run,
  withCancel,
  withTimeout,
} from '../sdk/index.ts';
import { type Message, probeClient, ready, startProbeServer, unary } from './support/grpc.ts';
import { trackTimers } from './support/timers.ts';

const SOAK_SECONDS = Number(process.env.CTXFLOW_SOAK_SECONDS ?? 30);
const WARMUP_SECONDS = 5;
const CHURN_PER_SECOND = 300;
const NORMAL_PER_SECOND = 100;
/** Heap growth allowed between the end of the warm-up and the end of the load, after GC. */
const HEAP_SLACK_BYTES = 8 * 1024 * 1024;

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

function heapAfterGc(): number {
  gc();
  gc();
  return process.memoryUsage().heapUsed;
}

const openFds = () => readdirSync('/proc/self/fd').length;

/** Polls `read` until it is at most `target`, for up to `ms`; returns the last value read. */
async function settlesTo(read: () => number | Promise<number>, target: number, ms: number): Promise<number> {
  const until = Date.now() + ms;
  let value = await read();
  while (value > target && Date.now() < until) {
    await sleep(50);
    value = await read();
  }
  return value;
}

/** Waits `ms`, or until `ctx` ends. */
function work(ms: number, ctx: Context): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      stop();
      resolve();
    }, ms);
    const stop = ctx.onDone(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}

test(`${CHURN_PER_SECOND} cancels/s on one connection for ${SOAK_SECONDS} s: no failed call, no session reset, no leak`, {
  timeout: (SOAK_SECONDS + WARMUP_SECONDS + 60) * 1000,
}, async () => {
  const server = await startProbeServer(
    {
      unary: async (call: grpc.ServerUnaryCall<Message, Message>) => {
        const ctx = current();
        await work(Number(call.request.ms), ctx);
        ctx.throwIfDone();
        return { ok: true };
      },
    },
    { resetGuard: true },
  );
  const client = probeClient(server.address);
  const timers = trackTimers();
  try {
    await ready(client);
    const channel = client.getChannel();
    let resets = 0;
    let watching = true;
    const watch = (state: grpc.connectivityState) => {
      channel.watchConnectivityState(state, Infinity, () => {
        const next = channel.getConnectivityState(false);
        if (state === grpc.connectivityState.READY && next !== state) resets++;
        if (watching) watch(next);
      });
    };
    watch(channel.getConnectivityState(false));
    await unary(client, { ms: 0 });
    const idleTimers = await timers.live();
    const idleFds = openFds();

    const counts = { normal: 0, churn: 0 };
    const failures: string[] = [];
    const pending = new Set<Promise<void>>();
    const track = (promise: Promise<void>) => {
      pending.add(promise);
      promise.finally(() => pending.delete(promise));
    };
    const normalCall = () => {
      const ctx = withTimeout(background(), 2_000);
      track(
        run(ctx, () => unary(client, { ms: 10 }))
          .then(
            (answer) => {
              if (answer.ok === true) counts.normal++;
              else failures.push(`normal call answered ${JSON.stringify(answer)}`);
            },
            (error: Error) => {
              failures.push(`normal call: ${error.message}`);
            },
          )
          .finally(() => ctx.cancel()),
      );
    };
    let churned = 0;
    const churnCall = () => {
      const k = churned++;
      // Deterministic spread: deadlines of 20-59 ms, cancels after 5-80 ms.
      const ctx = k % 2 === 0 ? withTimeout(background(), 20 + (k % 40)) : withCancel(background());
      if (k % 2 === 1) setTimeout(() => ctx.cancel(), 5 + ((k * 37) % 76));
      track(
        run(ctx, () => unary(client, { ms: 200 })).then(
          () => {
            failures.push('a call that should have ended early succeeded');
          },
          (error: unknown) => {
            if (isContextDoneError(error)) counts.churn++;
            else failures.push(`churn call: ${(error as Error).message}`);
          },
        ),
      );
    };

    // Calls are due at fixed rates; a tick late on a busy machine starts the ones it owes.
    const load = async (seconds: number) => {
      const start = Date.now();
      let churnDue = 0;
      let normalDue = 0;
      while (Date.now() - start < seconds * 1000) {
        const elapsed = (Date.now() - start) / 1000;
        for (; churnDue < elapsed * CHURN_PER_SECOND; churnDue++) churnCall();
        for (; normalDue < elapsed * NORMAL_PER_SECOND; normalDue++) normalCall();
        await sleep(10);
      }
      await Promise.all(pending);
    };

    await load(WARMUP_SECONDS);
    const warmHeap = heapAfterGc();
    const warmCounts = { ...counts };
    await load(SOAK_SECONDS);
    const endHeap = heapAfterGc();

    const fds = await settlesTo(openFds, idleFds, 2_000);
    // The deadline queue's one timer may stay armed for a deadline of the load, until its time.
    const liveTimers = await settlesTo(() => timers.live(), idleTimers + 1, 2_000);
    watching = false;

    assert.deepEqual(failures.slice(0, 10), []);
    assert.equal(resets, 0, 'session resets');
    const soaked = { normal: counts.normal - warmCounts.normal, churn: counts.churn - warmCounts.churn };
    // Rates are targets; a busy machine may fall behind, never by half.
    assert.ok(soaked.churn >= (SOAK_SECONDS * CHURN_PER_SECOND) / 2, `churn calls ${soaked.churn}`);
    assert.ok(soaked.normal >= (SOAK_SECONDS * NORMAL_PER_SECOND) / 2, `normal calls ${soaked.normal}`);
    assert.ok(
      endHeap - warmHeap < HEAP_SLACK_BYTES,
      `heap grew by ${((endHeap - warmHeap) / 1024 / 1024).toFixed(1)} MB over ${soaked.churn + soaked.normal} calls`,
    );
    assert.ok(fds <= idleFds, `${fds} fds open after the load, ${idleFds} before`);
    assert.ok(liveTimers <= idleTimers + 1, `${liveTimers} timers live after the load, ${idleTimers} before`);
  } finally {
    timers.stop();
    client.close();
    await server.close();
  }
});
