import assert from 'node:assert/strict';
import http2 from 'node:http2';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import * as grpc from '@grpc/grpc-js';
import { context as otel, ROOT_CONTEXT, trace } from '@opentelemetry/api';
import { contextOf, type GrpcContextError, toContextError } from '../adapters/grpc/index.ts';
import { background, type Context, current, run, withCancel, withTimeout } from '../sdk/context.ts';
import { CancelledError, ContextDoneError, DeadlineExceededError } from '../sdk/errors.ts';
import {
  assertEndedBy,
  collect,
  deferred,
  type Message,
  type ProbeClient,
  probeClient,
  rawCall,
  ready,
  serverBinding,
  startProbeServer,
  type TestServer,
  unary,
} from './support/grpc.ts';

/** What a handler saw: its context and a few facts about it at the start. */
interface Seen {
  ctx: Context;
  remaining: number;
  metadata: Record<string, unknown>;
  callDeadline: number;
}

function see(call: { metadata: grpc.Metadata; getDeadline(): grpc.Deadline }): Seen {
  const ctx = current();
  const deadline = call.getDeadline();
  return {
    ctx,
    remaining: ctx.remaining(),
    metadata: call.metadata.getMap(),
    callDeadline: deadline instanceof Date ? deadline.getTime() : deadline,
  };
}

/** Resolves with the cause once `ctx` ends, and with whether its signal aborted by then. */
function ended(ctx: Context): Promise<{ code: string; aborted: boolean }> {
  return new Promise((resolve) => {
    const signal = ctx.signal;
    ctx.onDone((error) => resolve({ code: error.cause.code, aborted: signal.aborted }));
  });
}

describe('grpc unary', () => {
  let server: TestServer;
  let client: ProbeClient;
  const seen: Seen[] = [];
  let calls = 0;
  const hang = new Map<string, (seen: Seen) => void>();

  before(async () => {
    server = await startProbeServer({
      unary: async (call: grpc.ServerUnaryCall<Message, Message>) => {
        calls++;
        const s = see(call);
        seen.push(s);
        if (call.request.hang !== undefined) {
          hang.get(call.request.hang)?.(s);
          // Never answers: the context's end must end the call.
          await new Promise(() => {});
        }
        if (call.request.sleep !== undefined)
          await sleep(call.request.sleep, undefined, { signal: s.ctx.signal });
        if (call.request.fail === 'throw-async') throw new Error('boom');
        if (call.request.fail === 'cause') {
          throw new CancelledError({ code: 'out_of_stock', message: 'sku 42' });
        }
        return { remaining: s.remaining, traceId: s.ctx.traceId ?? null, metadata: s.metadata };
      },
    });
    client = probeClient(server.address);
    await ready(client);
  });

  after(async () => {
    client.close();
    await server.close();
  });

  test('the handler runs in a context with the budget minus the reserve', async () => {
    const ctx = withTimeout(background(), 1000);
    try {
      const started = Date.now();
      const response = await run(ctx, () => unary(client));
      const s = seen.at(-1) as Seen;
      assert.equal(response.remaining, s.remaining);
      // The server's deadline is the client's minus the 5 ms reserve, less the transit time.
      const expected = (ctx.deadline as number) - 5 - Date.now();
      assert.ok(s.remaining <= 1000 - 5, `remaining ${s.remaining}`);
      assert.ok(s.remaining >= expected - 5 && s.remaining <= expected + (Date.now() - started) + 2);
      const skew = s.callDeadline - ((ctx.deadline as number) - 5);
      // Relative on the wire: the server counts from arrival, so transit time is added (the reserve covers it).
      assert.ok(skew >= -1 && skew <= Date.now() - started + 1, `grpc-timeout carries it (${skew} ms off)`);
      // grpc-timeout alone carries the budget: ctx-timeout would repeat it.
      assert.equal(s.metadata['ctx-timeout'], undefined, 'no ctx-timeout beside grpc-timeout');
      assert.equal(s.metadata['ctx-deadline'], undefined, 'ctx-deadline only with sendDeadline');
    } finally {
      ctx.cancel();
    }
  });

  test('an earlier explicit deadline is kept', async () => {
    const ctx = withTimeout(background(), 5000);
    try {
      await run(ctx, () => unary(client, {}, { deadline: Date.now() + 300 }));
      const s = seen.at(-1) as Seen;
      assert.ok(s.remaining <= 300 && s.remaining > 250, `remaining ${s.remaining}`);
      assert.ok(s.callDeadline - Date.now() <= 300, 'grpc-timeout carries the explicit deadline');
    } finally {
      ctx.cancel();
    }
  });

  test('sendDeadline: true sends ctx-deadline beside grpc-timeout; the server takes the earlier', async () => {
    const withDeadline = probeClient(server.address, { sendDeadline: true });
    const ctx = withTimeout(background(), 1000);
    try {
      await ready(withDeadline);
      await run(ctx, () => unary(withDeadline));
      const s = seen.at(-1) as Seen;
      // The absolute deadline minus the reserve, as grpc-timeout carries it relative.
      assert.equal(s.metadata['ctx-deadline'], String((ctx.deadline as number) - 5));
      assert.equal(s.metadata['ctx-timeout'], undefined);
      assert.ok((s.ctx.deadline as number) <= (ctx.deadline as number) - 5, 'never later than the sender');
    } finally {
      ctx.cancel();
      withDeadline.close();
    }
  });

  test('without a deadline the handler context has none, and the trace id crosses', async () => {
    const traceId = '0af7651916cd43dd8448eb211c80319c';
    const parent = trace.setSpanContext(ROOT_CONTEXT, { traceId, spanId: 'b7ad6b7169203331', traceFlags: 1 });
    const response = await otel.with(parent, () => unary(client));
    assert.equal(response.traceId, traceId);
    assert.equal(response.remaining, null); // Infinity serializes as null
    assert.equal(seen.at(-1)?.ctx.deadline, undefined);
  });

  test('a done context refuses to start the call: typed error at once, nothing sent', async () => {
    const before = calls;
    const ctx = withCancel(background());
    ctx.cancel({ code: 'shutdown', message: 'draining' });
    const error = await run(ctx, () => unary(client)).then(
      () => assert.fail('resolved'),
      (e: unknown) => e,
    );
    assertEndedBy(error, ctx);
    assert.ok(error instanceof CancelledError);
    assert.equal(error.cause.code, 'shutdown');
    await sleep(20);
    assert.equal(calls, before);
  });

  test('less than the reserve left: DEADLINE_EXCEEDED before sending', async () => {
    const before = calls;
    const ctx = withTimeout(background(), 3);
    try {
      const error = await run(ctx, () => unary(client)).catch((e: unknown) => e);
      assert.ok(error instanceof DeadlineExceededError, String(error));
      assert.equal((error as GrpcContextError).code, grpc.status.DEADLINE_EXCEEDED);
      await sleep(20);
      assert.equal(calls, before);
    } finally {
      ctx.cancel();
    }
  });

  test('cancelling the client context cancels the call; the handler sees upstream_cancelled', async () => {
    const started = deferred<Seen>();
    hang.set('cancel', started.resolve);
    const ctx = withTimeout(background(), 5000);
    const pending = run(ctx, () => unary(client, { hang: 'cancel' })).catch((e: unknown) => e);
    const s = await started.promise;
    const end = ended(s.ctx);
    ctx.cancel({ code: 'user_left' });
    const error = await pending;
    assertEndedBy(error, ctx);
    assert.equal((error as ContextDoneError).cause.code, 'user_left');
    assert.deepEqual(await end, { code: 'upstream_cancelled', aborted: true });
  });

  test('the server budget ends the call with DEADLINE_EXCEEDED and ctx-cancel-reason', async () => {
    const budgeted = await startProbeServer(
      {
        unary: async () => {
          const s = current();
          await new Promise((resolve) => s.signal.addEventListener('abort', resolve));
          return { late: true };
        },
      },
      { ctxflow: { budgetMs: 50 } },
    );
    const c = probeClient(budgeted.address);
    try {
      const started = Date.now();
      const error = (await unary(c).catch((e: unknown) => e)) as GrpcContextError;
      assert.ok(error instanceof DeadlineExceededError, String(error));
      assert.equal(error.code, grpc.status.DEADLINE_EXCEEDED);
      assert.deepEqual(error.metadata.get('ctx-cancel-reason'), ['deadline_exceeded']);
      assert.ok(Date.now() - started < 1000);
    } finally {
      c.close();
      await budgeted.close();
    }
  });

  describe('an answer after the context ended is not sent as OK', () => {
    // The call's only deadline is its grpc-timeout (a raw HTTP/2 caller enforces none), so no
    // ctxflow timer ends it; the handler blocks the event loop until its context is past that
    // deadline, so grpc-js's timer cannot end it first either: the answer alone decides.
    const spinPast = (ctx: Context) => {
      while (!ctx.done) {}
    };
    let late: TestServer;
    let session: http2.ClientHttp2Session;
    before(async () => {
      late = await startProbeServer({
        unary: () => {
          spinPast(current());
          return { late: true };
        },
        serverStream: (call) => {
          spinPast(current());
          call.write({ late: true });
          call.end();
        },
      });
      session = http2.connect(`http://${late.address}`);
    });
    after(async () => {
      session.close();
      await late.close();
    });

    for (const method of ['Unary', 'ServerStream']) {
      test(`${method}: DEADLINE_EXCEEDED with ctx-cancel-reason, no message`, async () => {
        const answer = await rawCall(session, `/ctxflow.test.Probe/${method}`, { 'grpc-timeout': '40m' });
        assert.equal(answer.status, grpc.status.DEADLINE_EXCEEDED, JSON.stringify(answer));
        const trailers = answer.trailers['grpc-status'] === undefined ? answer.headers : answer.trailers;
        assert.equal(trailers['ctx-cancel-reason'], 'deadline_exceeded', JSON.stringify(answer));
        assert.equal(answer.body.length, 0);
      });
    }
  });

  test('a remote cause crosses as the typed error with that cause', async () => {
    const error = (await unary(client, { fail: 'cause' }).catch((e: unknown) => e)) as GrpcContextError;
    assert.ok(error instanceof CancelledError);
    assert.deepEqual(error.cause, { code: 'out_of_stock', message: 'sku 42' });
    assert.equal(error.code, grpc.status.CANCELLED);
    assert.equal(seen.at(-1)?.ctx.cause?.code, 'out_of_stock');
  });

  test('an async handler that rejects fails the call with UNKNOWN and cancels its context (error)', async () => {
    const error = (await unary(client, { fail: 'throw-async' }).catch(
      (e: unknown) => e,
    )) as grpc.ServiceError;
    assert.equal(error.code, grpc.status.UNKNOWN);
    assert.equal(toContextError(error), undefined);
    assert.equal(seen.at(-1)?.ctx.cause?.code, 'error');
  });

  test('the handler context is released when the call ends', async () => {
    await unary(client);
    const s = seen.at(-1) as Seen;
    assert.equal(s.ctx.done, true);
    assert.equal(s.ctx.cause?.code, 'cancelled');
  });

  test('contextOf(call) finds the context from the call object', async () => {
    const found = deferred<boolean>();
    const other = await startProbeServer(
      {
        unary: (call, callback) => {
          found.resolve(contextOf(call) === current());
          callback?.(null, {});
        },
      },
      { wrap: serverBinding() === 'wrapService' },
    );
    const c = probeClient(other.address);
    try {
      await unary(c);
      assert.equal(await found.promise, true);
    } finally {
      c.close();
      await other.close();
    }
  });
});

// Handlers outside wrapService get a context from serverInterceptor only.
if (serverBinding() === 'interceptor') {
  describe('grpc server without wrapService', () => {
    test('callback handlers see current(); a sync throw is UNKNOWN with the context cancelled (error)', async () => {
      const contexts: Context[] = [];
      const server = await startProbeServer(
        {
          unary: (call, callback) => {
            const ctx = current();
            contexts.push(ctx);
            if (call.request.throw) throw new Error('sync boom');
            setTimeout(() => callback?.(null, { same: current() === ctx, remaining: ctx.remaining() }), 5);
          },
        },
        { wrap: false },
      );
      const client = probeClient(server.address);
      try {
        const ctx = withTimeout(background(), 2000);
        const response = await run(ctx, () => unary(client));
        ctx.cancel();
        assert.equal(response.same, true);
        assert.ok(response.remaining > 1900 && response.remaining <= 1995);
        const error = (await unary(client, { throw: true }).catch((e: unknown) => e)) as grpc.ServiceError;
        assert.equal(error.code, grpc.status.UNKNOWN);
        assert.equal(contexts.at(-1)?.cause?.code, 'error');
      } finally {
        client.close();
        await server.close();
      }
    });

    test('a handler passing its own context error answers with that status and reason', async () => {
      const server = await startProbeServer(
        {
          unary: (_call, callback) => {
            const ctx = current();
            ctx.onDone((error) => callback?.(error));
          },
        },
        { wrap: false, ctxflow: { budgetMs: 30 } },
      );
      const client = probeClient(server.address);
      try {
        const error = (await unary(client).catch((e: unknown) => e)) as GrpcContextError;
        assert.ok(error instanceof DeadlineExceededError);
        assert.deepEqual(error.metadata.get('ctx-cancel-reason'), ['deadline_exceeded']);
      } finally {
        client.close();
        await server.close();
      }
    });
  });
}

describe('grpc inbound metadata', () => {
  let server: TestServer;
  let raw: ProbeClient;
  let handled = 0;
  before(async () => {
    server = await startProbeServer({
      unary: () => {
        handled++;
        const ctx = current();
        return { remaining: ctx.remaining() };
      },
    });
    raw = probeClient(server.address, false);
    await ready(raw);
  });
  after(async () => {
    raw.close();
    await server.close();
  });

  test('ctx-timeout: 0 sheds the call without running the handler', async () => {
    const before = handled;
    const metadata = new grpc.Metadata();
    metadata.set('ctx-timeout', '0');
    const error = (await unary(raw, {}, {}, metadata).catch((e: unknown) => e)) as grpc.ServiceError;
    assert.equal(error.code, grpc.status.DEADLINE_EXCEEDED);
    assert.deepEqual(error.metadata.get('ctx-cancel-reason'), ['deadline_exceeded']);
    assert.equal(handled, before);
  });

  test('ctx-timeout shorter than grpc-timeout wins; a longer one does not stretch it', async () => {
    const short = new grpc.Metadata();
    short.set('ctx-timeout', '200');
    const a = await unary(raw, {}, { deadline: Date.now() + 5000 }, short);
    assert.ok(a.remaining <= 200 && a.remaining > 150, `remaining ${a.remaining}`);
    const long = new grpc.Metadata();
    long.set('ctx-timeout', '50000');
    const b = await unary(raw, {}, { deadline: Date.now() + 300 }, long);
    assert.ok(b.remaining <= 300 && b.remaining > 250, `remaining ${b.remaining}`);
  });

  test('malformed ctx-* values are ignored', async () => {
    const metadata = new grpc.Metadata();
    metadata.set('ctx-timeout', '-5');
    metadata.set('ctx-deadline', 'soon');
    metadata.set('ctx-cancel-reason', 'Nope!');
    const response = await unary(raw, {}, { deadline: Date.now() + 400 }, metadata);
    assert.ok(response.remaining <= 400 && response.remaining > 350);
  });

  test("a sidecar's x-envoy-expected-rq-timeout-ms counts when shorter than grpc-timeout", async () => {
    const metadata = new grpc.Metadata();
    metadata.set('x-envoy-expected-rq-timeout-ms', '200');
    const short = await unary(raw, {}, { deadline: Date.now() + 5000 }, metadata);
    assert.ok(short.remaining <= 200 && short.remaining > 150, `remaining ${short.remaining}`);
    metadata.set('x-envoy-expected-rq-timeout-ms', '50000');
    const long = await unary(raw, {}, { deadline: Date.now() + 300 }, metadata);
    assert.ok(long.remaining <= 300 && long.remaining > 250, `remaining ${long.remaining}`);
  });

  test('trustInbound: false ignores ctx-* but keeps grpc-timeout, which the transport enforces anyway', async () => {
    const edge = await startProbeServer(
      { unary: () => ({ remaining: current().remaining() }) },
      { ctxflow: { trustInbound: false, budgetMs: 700 } },
    );
    const c = probeClient(edge.address, false);
    try {
      const metadata = new grpc.Metadata();
      metadata.set('ctx-timeout', '100');
      const short = await unary(c, {}, { deadline: Date.now() + 200 }, metadata);
      assert.ok(short.remaining > 150 && short.remaining <= 200, `remaining ${short.remaining}`);
      const long = await unary(c, {}, { deadline: Date.now() + 5_000 }, metadata);
      assert.ok(long.remaining > 600 && long.remaining <= 700, `remaining ${long.remaining}`);
    } finally {
      c.close();
      await edge.close();
    }
  });
});

describe('grpc streaming', () => {
  let server: TestServer;
  let client: ProbeClient;
  const started = new Map<string, (ctx: Context) => void>();

  /** Streams `count` messages, one every 10 ms, under the call's context. */
  const serverStream = (call: grpc.ServerWritableStream<Message, Message>) => {
    const ctx = current();
    started.get(call.request.id)?.(ctx);
    let i = 0;
    const timer = setInterval(() => {
      if (current() !== ctx) call.destroy(new Error('lost context'));
      call.write({ i: i++, remaining: ctx.remaining() });
      if (i === call.request.count) {
        clearInterval(timer);
        call.end();
      }
    }, 10);
    ctx.onDone(() => clearInterval(timer));
  };

  before(async () => {
    server = await startProbeServer({
      serverStream,
      clientStream: async (call: grpc.ServerReadableStream<Message, Message>) => {
        const ctx = current();
        let sum = 0;
        let same = true;
        for await (const message of call) {
          sum += message.n;
          same &&= current() === ctx;
        }
        return { sum, same, remaining: ctx.remaining() };
      },
      bidi: (call) => {
        const ctx = current();
        started.get('bidi')?.(ctx);
        call.on('data', (message: Message) => {
          call.write({ echo: message.n, same: current() === ctx, remaining: ctx.remaining() });
        });
        // Not ending on 'end': a Node http2 client's cancel sends END_STREAM just before RST_STREAM,
        // and a handler that ends then races the cancel (and wins: its context ends 'cancelled').
        ctx.onDone(() => call.end());
      },
    });
    client = probeClient(server.address);
    await ready(client);
  });

  after(async () => {
    client.close();
    await server.close();
  });

  test('server streaming: messages flow under the call context', async () => {
    const ctx = withTimeout(background(), 2000);
    try {
      const { messages, error } = await collect(run(ctx, () => client.serverStream({ id: 'ok', count: 3 })));
      assert.equal(error, undefined);
      assert.equal(messages.length, 3);
      for (const m of messages) assert.ok(m.remaining <= 1995 && m.remaining > 1500);
    } finally {
      ctx.cancel();
    }
  });

  test('server streaming: a client cancel reaches the handler as upstream_cancelled', async () => {
    const handler = deferred<Context>();
    started.set('cancel', handler.resolve);
    const ctx = withCancel(background());
    const stream = run(ctx, () => client.serverStream({ id: 'cancel', count: 1000 }));
    const result = collect(stream);
    const serverCtx = await handler.promise;
    const end = ended(serverCtx);
    await sleep(30);
    ctx.cancel();
    const { messages, error } = await result;
    assert.ok(messages.length >= 1);
    assertEndedBy(error, ctx);
    assert.deepEqual(await end, { code: 'upstream_cancelled', aborted: true });
  });

  test('server streaming: the deadline ends the stream with DEADLINE_EXCEEDED and the reason', async () => {
    // The server's own 120 ms budget ends the stream, well before the client's 1 s: the client's
    // cancel at its deadline never races the server's deadline.
    const budgeted = await startProbeServer({ serverStream }, { ctxflow: { budgetMs: 120 } });
    const c = probeClient(budgeted.address);
    const handler = deferred<Context>();
    started.set('deadline', handler.resolve);
    const ctx = withTimeout(background(), 1_000);
    try {
      const result = collect(run(ctx, () => c.serverStream({ id: 'deadline', count: 1000 })));
      const end = ended(await handler.promise);
      const { messages, error } = await result;
      assert.ok(messages.length >= 1);
      assert.ok(error instanceof DeadlineExceededError, String(error));
      assert.deepEqual((error as GrpcContextError).metadata.get('ctx-cancel-reason'), ['deadline_exceeded']);
      assert.deepEqual(await end, { code: 'deadline_exceeded', aborted: true });
    } finally {
      ctx.cancel();
      c.close();
      await budgeted.close();
    }
  });

  test('client streaming: the handler reads every message under its context', async () => {
    const ctx = withTimeout(background(), 2000);
    try {
      const response = await run(
        ctx,
        () =>
          new Promise<Message>((resolve, reject) => {
            const call = client.clientStream(new grpc.Metadata(), {}, (error, value) =>
              error ? reject(error) : resolve(value ?? {}),
            );
            for (let n = 1; n <= 5; n++) call.write({ n });
            call.end();
          }),
      );
      assert.deepEqual({ sum: response.sum, same: response.same }, { sum: 15, same: true });
      assert.ok(response.remaining <= 1995 && response.remaining > 1500);
    } finally {
      ctx.cancel();
    }
  });

  test('bidi: echoes under the call context, and a cancel reaches the handler', async () => {
    const handler = deferred<Context>();
    started.set('bidi', handler.resolve);
    const ctx = withCancel(background());
    const call = run(ctx, () => client.bidi());
    const errors: unknown[] = [];
    call.on('error', (e) => errors.push(e));
    const replies: Message[] = [];
    call.on('data', (m: Message) => replies.push(m));
    call.write({ n: 1 });
    call.write({ n: 2 });
    const serverCtx = await handler.promise;
    const end = ended(serverCtx);
    while (replies.length < 2) await sleep(5);
    assert.deepEqual(
      replies.map((r) => [r.echo, r.same]),
      [
        [1, true],
        [2, true],
      ],
    );
    ctx.cancel({ code: 'shutdown' });
    assert.deepEqual(await end, { code: 'upstream_cancelled', aborted: true });
    await sleep(10);
    assertEndedBy(errors[0], ctx);
  });
});

test('toContextError leaves other errors alone and keeps context errors', () => {
  assert.equal(toContextError(new Error('x')), undefined);
  assert.equal(toContextError(Object.assign(new Error('y'), { code: grpc.status.UNAVAILABLE })), undefined);
  const own = new DeadlineExceededError({ code: 'deadline_exceeded' });
  assert.equal(toContextError(own), own);
  const remote = toContextError(
    Object.assign(new Error('4 DEADLINE_EXCEEDED'), {
      code: grpc.status.DEADLINE_EXCEEDED,
      details: 'Deadline exceeded',
      metadata: new grpc.Metadata(),
    }),
  );
  assert.ok(remote instanceof DeadlineExceededError);
  assert.equal(remote.cause.code, 'deadline_exceeded');
  assert.ok(remote instanceof ContextDoneError);
});
