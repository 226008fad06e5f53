/**
 * Three gRPC hops, all Node: test client → A → B → C, each a real server on 127.0.0.1 with
 * serverInterceptor and a clientOptions() client to the next.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import type { GrpcContextError } from '../adapters/grpc/index.ts';
import { background, run, withCancel, withTimeout } from '../sdk/context.ts';
import { DeadlineExceededError } from '../sdk/errors.ts';
import {
  assertEndedBy,
  deferred,
  type HandlerHop,
  type Message,
  type ProbeClient,
  probeClient,
  ready,
  recordHop,
  startProbeServer,
  type TestServer,
  unary,
} from './support/grpc.ts';

describe('grpc: three hops A → B → C', () => {
  const servers: TestServer[] = [];
  const clients: ProbeClient[] = [];
  let hops: HandlerHop[] = [];
  let cStarted = deferred<void>();
  let entry: ProbeClient;
  // A with a service budget of 200 ms: inside any client deadline of 300 ms, by a wide margin.
  let budgeted: ProbeClient;

  const record = (name: string): HandlerHop => recordHop(hops, name);

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
    const hopA = {
      unary: async (call: grpc.ServerUnaryCall<Message, Message>) => {
        record('A');
        return unary(toB, call.request);
      },
    };
    const a = await startProbeServer(hopA);
    const aBudgeted = await startProbeServer(hopA, { ctxflow: { budgetMs: 200 } });
    entry = probeClient(a.address);
    budgeted = probeClient(aBudgeted.address);
    servers.push(a, aBudgeted, b, c);
    clients.push(entry, budgeted, toB, toC);
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
      const sent = Date.now();
      await run(root, () => unary(entry));
      assert.deepEqual(
        hops.map((h) => h.name),
        ['A', 'B', 'C'],
      );
      // Each caller sends as its handler starts (A: as the test calls), so a hop's budget is what
      // its caller had left at that moment less one reserve; time in transit is not counted.
      let parentDeadline = rootDeadline;
      let sentAt = sent;
      for (const hop of hops) {
        const deadline = hop.deadline as number;
        const remaining = deadline - hop.at;
        const granted = parentDeadline - sentAt - 5;
        const between = hop.at - sentAt;
        assert.ok(
          remaining <= granted,
          `${hop.name}: ${remaining} ms left, more than the ${granted} granted`,
        );
        assert.ok(
          remaining >= granted - between - 5,
          `${hop.name}: ${remaining} ms left of ${granted}, ${between} ms after the send`,
        );
        // In absolute time too, unless the send took longer than the reserve (a loaded machine).
        if (between < 5) assert.ok(deadline <= parentDeadline, `${hop.name} must end before its caller`);
        parentDeadline = deadline;
        sentAt = hop.at;
      }
    } finally {
      root.cancel();
    }
  });

  test('slow C past the deadline: C, B and A stop with deadline_exceeded, the client gets DEADLINE_EXCEEDED with the reason', async () => {
    reset();
    // The chain's deadline (A's 200 ms budget) comes well before the client's (300 ms): the chain
    // runs out and answers with its reason; the client's own timer, and the cancel it would send,
    // never decide the outcome. (With the same deadline on both sides, a client cancel arriving
    // more than 5 ms before A's deadline, as transit on a loaded machine allows, reads as a cancel.)
    const root = withTimeout(background(), 300);
    try {
      const started = Date.now();
      const error = (await run(root, () => unary(budgeted, { mode: 'hang' })).catch(
        (e: unknown) => e,
      )) as GrpcContextError;
      const elapsed = Date.now() - started;
      assert.ok(error instanceof DeadlineExceededError, String(error));
      assert.equal(error.cause.code, 'deadline_exceeded');
      assert.equal(error.code, grpc.status.DEADLINE_EXCEEDED);
      assert.deepEqual(error.metadata.get('ctx-cancel-reason'), ['deadline_exceeded']);
      assert.ok(elapsed >= 180 && elapsed < 1000, `ended after ${elapsed} ms`);
      await Promise.all(hops.map((h) => new Promise((resolve) => h.ctx.onDone(resolve))));
      assert.deepEqual(
        hops.map((h) => [h.name, h.ctx.cause?.code, h.signal.aborted]),
        [
          ['A', 'deadline_exceeded', true],
          ['B', 'deadline_exceeded', true],
          ['C', 'deadline_exceeded', true],
        ],
      );
    } finally {
      root.cancel();
    }
  });

  test('a client cancel reaches C as upstream_cancelled and aborts its signal', async () => {
    reset();
    const root = withCancel(background());
    const pending = run(root, () => unary(entry, { mode: 'hang' })).catch((e: unknown) => e);
    await cStarted.promise;
    const cHop = hops.find((h) => h.name === 'C') as HandlerHop;
    const cEnded = new Promise<number>((resolve) =>
      cHop.signal.addEventListener('abort', () => resolve(Date.now())),
    );
    const cancelledAt = Date.now();
    root.cancel({ code: 'user_left' });
    const error = await pending;
    assertEndedBy(error, root);
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
