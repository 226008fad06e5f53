/**
 * Three gRPC hops, all Node: test client → A → B → C, each a real server on 127.0.0.1 with
 * serverInterceptor and a clientOptions() client to the next.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import type { GrpcContextError } from '../adapters/grpc.ts';
import { background, type Context, current, run, withCancel, withTimeout } from '../sdk/context.ts';
import { DeadlineExceededError } from '../sdk/errors.ts';
import {
  deferred,
  type Message,
  type ProbeClient,
  probeClient,
  ready,
  startProbeServer,
  type TestServer,
  unary,
} from './support/grpc.ts';

interface Hop {
  name: string;
  ctx: Context;
  signal: AbortSignal;
  /** The handler context's deadline, and when the handler started. */
  deadline: number | undefined;
  at: number;
}

describe('grpc: three hops A → B → C', () => {
  const servers: TestServer[] = [];
  const clients: ProbeClient[] = [];
  let hops: Hop[] = [];
  let cStarted = deferred<void>();
  let entry: ProbeClient;

  function record(name: string): Hop {
    const ctx = current();
    const hop = { name, ctx, signal: ctx.signal, deadline: ctx.deadline, at: Date.now() };
    hops.push(hop);
    return hop;
  }

  before(async () => {
    const c = await startProbeServer({
      unary: async (call: grpc.ServerUnaryCall<Message, Message>) => {
        const hop = record('C');
        cStarted.resolve();
        if (call.request.mode === 'hang') {
          // Stops only when its context ends (deadline or cancellation).
          await new Promise((_, reject) =>
            hop.signal.addEventListener('abort', () => reject(hop.signal.reason)),
          );
        }
        return { at: 'C' };
      },
    });
    const toC = probeClient(c.address);
    const b = await startProbeServer({
      unary: async (call: grpc.ServerUnaryCall<Message, Message>) => {
        record('B');
        return unary(toC, call.request);
      },
    });
    const toB = probeClient(b.address);
    const a = await startProbeServer({
      unary: async (call: grpc.ServerUnaryCall<Message, Message>) => {
        record('A');
        return unary(toB, call.request);
      },
    });
    entry = probeClient(a.address);
    servers.push(a, b, c);
    clients.push(entry, toB, toC);
    for (const client of clients) await ready(client);
    // Warm every hop, so transit times are those of a running service.
    for (let i = 0; i < 20; i++) await run(withTimeout(background(), 1000), () => unary(entry));
  });

  after(async () => {
    for (const client of clients) client.close();
    await Promise.all(servers.map((s) => s.close()));
  });

  function reset(): void {
    hops = [];
    cStarted = deferred<void>();
  }

  test('the budget shrinks by the reserve at each hop, never more than the parent', async () => {
    reset();
    const root = withTimeout(background(), 1000);
    try {
      const rootDeadline = root.deadline as number;
      await run(root, () => unary(entry));
      assert.deepEqual(
        hops.map((h) => h.name),
        ['A', 'B', 'C'],
      );
      let parent = rootDeadline;
      hops.forEach((hop, i) => {
        const deadline = hop.deadline as number;
        // Root minus one 5 ms reserve per hop; relative budgets add the transit time back.
        const expected = rootDeadline - 5 * (i + 1);
        assert.ok(
          deadline >= expected - 5 && deadline <= expected + 5,
          `${hop.name}: deadline ${deadline - rootDeadline} ms from root's, expected ${-5 * (i + 1)} ± 5`,
        );
        assert.ok(deadline < parent, `${hop.name} must end before its caller`);
        // What the handler saw left when it started: the root's budget minus elapsed and reserves.
        const remaining = deadline - hop.at;
        const expectedRemaining = rootDeadline - hop.at - 5 * (i + 1);
        assert.ok(
          Math.abs(remaining - expectedRemaining) <= 5,
          `${hop.name}: ${remaining} vs ${expectedRemaining}`,
        );
        parent = deadline;
      });
    } finally {
      root.release();
    }
  });

  test('slow C past the deadline: C, B and A stop with deadline_exceeded, the client gets DEADLINE_EXCEEDED with the reason', async () => {
    reset();
    const root = withTimeout(background(), 300);
    try {
      const started = Date.now();
      const error = (await run(root, () => unary(entry, { mode: 'hang' })).catch(
        (e: unknown) => e,
      )) as GrpcContextError;
      const elapsed = Date.now() - started;
      assert.ok(error instanceof DeadlineExceededError, String(error));
      assert.equal(error.cause.code, 'deadline_exceeded');
      assert.equal(error.code, grpc.status.DEADLINE_EXCEEDED);
      // A answered before the client's own deadline (root − 5 ms) fired: the reason is A's.
      assert.deepEqual(error.metadata.get('ctx-cancel-reason'), ['deadline_exceeded']);
      assert.ok(elapsed >= 280 && elapsed < 300, `ended after ${elapsed} ms`);
      assert.deepEqual(
        hops.map((h) => [h.name, h.ctx.cause?.code, h.signal.aborted]),
        [
          ['A', 'deadline_exceeded', true],
          ['B', 'deadline_exceeded', true],
          ['C', 'deadline_exceeded', true],
        ],
      );
    } finally {
      root.release();
    }
  });

  test('a client cancel reaches C as upstream_cancelled and aborts its signal', async () => {
    reset();
    const root = withCancel(background());
    const pending = run(root, () => unary(entry, { mode: 'hang' })).catch((e: unknown) => e);
    await cStarted.promise;
    const cHop = hops.find((h) => h.name === 'C') as Hop;
    const cEnded = new Promise<number>((resolve) =>
      cHop.signal.addEventListener('abort', () => resolve(Date.now())),
    );
    const cancelledAt = Date.now();
    root.cancel({ code: 'user_left' });
    const error = await pending;
    assert.equal(error, root.error);
    const cAbortedAt = await cEnded;
    assert.ok(cAbortedAt - cancelledAt < 200, `C saw it after ${cAbortedAt - cancelledAt} ms`);
    assert.deepEqual(
      hops.map((h) => [h.name, h.ctx.cause?.code, h.signal.aborted]),
      [
        ['A', 'upstream_cancelled', true],
        ['B', 'upstream_cancelled', true],
        ['C', 'upstream_cancelled', true],
      ],
    );
  });
});
