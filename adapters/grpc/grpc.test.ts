/** Unit tests of the gRPC adapter against fake grpc-js calls: no sockets. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { context as otel, ROOT_CONTEXT, trace } from '@opentelemetry/api';
import {
  background,
  CancelledError,
  DeadlineExceededError,
  run,
  withCancel,
  withTimeout,
} from '../../sdk/index.ts';
import { ensureContextManager } from '../../sdk/wire.ts';
import { assertEndedBy } from '../../test/support/grpc.ts';
import { clientInterceptor, grpcStatusFor, toContextError, wrapService } from './index.ts';

type CallInterface = ConstructorParameters<typeof grpc.InterceptingCall>[0];

/** A bottom call that records what the interceptor did with it. */
function fakeCall() {
  const record: {
    metadata?: grpc.Metadata;
    listener?: Partial<grpc.InterceptingListener>;
    cancelled?: [grpc.status, string];
  } = {};
  const call: CallInterface = {
    start(metadata, listener) {
      record.metadata = metadata;
      record.listener = listener;
    },
    cancelWithStatus(code, details) {
      record.cancelled = [code, details];
      record.listener?.onReceiveStatus?.({ code, details, metadata: new grpc.Metadata() });
    },
    getPeer: () => 'fake',
    sendMessageWithContext() {},
    sendMessage() {},
    startRead() {},
    halfClose() {},
    getAuthContext: () => null,
  };
  return { call, record };
}

const methodDefinition = {
  path: '/test.Fake/Unary',
  requestStream: false,
  responseStream: false,
  requestSerialize: (v: Buffer) => v,
  responseDeserialize: (v: Buffer) => v,
};

/** Runs the interceptor under `ctx` and starts the call; what reached the bottom, and the statuses seen on top. */
function intercept(options: Partial<grpc.CallOptions> = {}, reserveMs?: number) {
  const { call, record } = fakeCall();
  const nextOptions: grpc.InterceptorOptions[] = [];
  const statuses: grpc.StatusObject[] = [];
  const top = clientInterceptor(reserveMs === undefined ? {} : { reserveMs })(
    { ...options, method_definition: methodDefinition } as grpc.InterceptorOptions,
    (o) => {
      nextOptions.push(o);
      return call as grpc.InterceptingCall;
    },
  );
  top.start(new grpc.Metadata(), { onReceiveStatus: (status) => statuses.push(status) });
  return { top, record, nextOptions, statuses };
}

describe('clientInterceptor', () => {
  test('sets the call deadline to the context deadline minus the reserve, and no ctx-* budget beside it', () => {
    const ctx = withTimeout(background(), 1000);
    try {
      const { nextOptions, record } = run(ctx, () => intercept());
      assert.equal(nextOptions[0]?.deadline, (ctx.deadline as number) - 5);
      // The call's deadline goes out as grpc-timeout: ctx-timeout would repeat it.
      assert.deepEqual(record.metadata?.get('ctx-timeout'), []);
      assert.deepEqual(record.metadata?.get('ctx-deadline'), [], 'ctx-deadline only with sendDeadline');
    } finally {
      ctx.cancel();
    }
  });

  test('sendDeadline: true also writes ctx-deadline', () => {
    const ctx = withTimeout(background(), 1000);
    try {
      const { call, record } = fakeCall();
      const top = run(ctx, () =>
        clientInterceptor({ sendDeadline: true })(
          { method_definition: methodDefinition } as grpc.InterceptorOptions,
          () => call as grpc.InterceptingCall,
        ),
      );
      top.start(new grpc.Metadata(), {});
      assert.equal(record.metadata?.get('ctx-deadline')[0], String((ctx.deadline as number) - 5));
    } finally {
      ctx.cancel();
    }
  });

  test('honours reserveMs', () => {
    const ctx = withTimeout(background(), 1000);
    try {
      const { nextOptions } = run(ctx, () => intercept({}, 50));
      assert.equal(nextOptions[0]?.deadline, (ctx.deadline as number) - 50);
    } finally {
      ctx.cancel();
    }
  });

  test('keeps an earlier explicit deadline', () => {
    const ctx = withTimeout(background(), 10_000);
    try {
      const explicit = Date.now() + 300;
      const { nextOptions, record } = run(ctx, () => intercept({ deadline: new Date(explicit) }));
      // The explicit deadline is sent as it is (no reserve), as grpc-timeout alone.
      assert.deepEqual(nextOptions[0]?.deadline, new Date(explicit));
      assert.deepEqual(record.metadata?.get('ctx-timeout'), []);
    } finally {
      ctx.cancel();
    }
  });

  test('replaces a later explicit deadline', () => {
    const ctx = withTimeout(background(), 200);
    try {
      const { nextOptions } = run(ctx, () => intercept({ deadline: Date.now() + 60_000 }));
      assert.equal(nextOptions[0]?.deadline, (ctx.deadline as number) - 5);
    } finally {
      ctx.cancel();
    }
  });

  test('writes no trace headers again when the metadata carries the active span; replaces another span', () => {
    ensureContextManager();
    const traceId = '4bf92f3577b34da6a3ce929d0e0e4736';
    const active = `00-${traceId}-00f067aa0ba902b7-01`;
    const parent = trace.setSpanContext(ROOT_CONTEXT, { traceId, spanId: '00f067aa0ba902b7', traceFlags: 1 });
    const start = (sent: string) => {
      const metadata = new grpc.Metadata();
      metadata.set('traceparent', sent);
      const written: string[] = [];
      const set = metadata.set.bind(metadata);
      metadata.set = (key, value) => {
        written.push(key);
        set(key, value);
      };
      const { call, record } = fakeCall();
      otel.with(parent, () =>
        clientInterceptor()(
          { method_definition: methodDefinition } as grpc.InterceptorOptions,
          () => call as grpc.InterceptingCall,
        ).start(metadata, {}),
      );
      return { written, traceparent: record.metadata?.get('traceparent')[0] };
    };
    // An instrumentation (instrumentation-grpc's client span) wrote the active span's already.
    assert.deepEqual(start(active), { written: [], traceparent: active });
    // Left by an earlier call under another span (metadata reused): replaced.
    const stale = start(`00-${traceId}-b7ad6b7169203331-01`);
    assert.equal(stale.traceparent, active);
    assert.ok(stale.written.includes('traceparent'));
  });

  test('writes traceparent from the active span, and nothing about deadlines without one', () => {
    ensureContextManager();
    const traceId = '4bf92f3577b34da6a3ce929d0e0e4736';
    const parent = trace.setSpanContext(ROOT_CONTEXT, { traceId, spanId: '00f067aa0ba902b7', traceFlags: 1 });
    const { record, nextOptions } = otel.with(parent, () => intercept());
    assert.equal(record.metadata?.get('traceparent')[0], `00-${traceId}-00f067aa0ba902b7-01`);
    assert.deepEqual(record.metadata?.get('ctx-timeout'), []);
    assert.equal(nextOptions[0]?.deadline, undefined);
  });

  test('a done context never reaches the channel; the status comes on a later tick', async () => {
    const ctx = withCancel(background());
    ctx.cancel({ code: 'shutdown', message: 'draining' });
    const { record, nextOptions, statuses } = run(ctx, () => intercept());
    assert.equal(nextOptions.length, 0);
    assert.equal(record.metadata, undefined);
    assert.equal(statuses.length, 0, 'not synchronously');
    await new Promise((resolve) => process.nextTick(resolve));
    const status = statuses[0] as grpc.StatusObject & { cause: unknown };
    assert.equal(status.code, grpc.status.CANCELLED);
    assert.deepEqual(status.metadata.get('ctx-cancel-reason'), ['shutdown draining']);
    assert.deepEqual(status.cause, { code: 'shutdown', message: 'draining' });
    const error = toContextError(Object.assign(new Error('x'), status));
    assertEndedBy(error, ctx);
  });

  test('the context ending cancels the call with its status; the local error is surfaced', () => {
    const ctx = withCancel(background());
    const { record, statuses } = run(ctx, () => intercept());
    ctx.cancel({ code: 'user_left' });
    assert.deepEqual(record.cancelled, [grpc.status.CANCELLED, 'ctxflow: user_left']);
    const status = statuses[0] as grpc.StatusObject;
    assert.deepEqual(status.metadata.get('ctx-cancel-reason'), ['user_left']);
    assertEndedBy(toContextError(Object.assign(new Error('x'), status)), ctx);
  });

  test('a remote DEADLINE_EXCEEDED gets its cause from ctx-cancel-reason', () => {
    const ctx = withTimeout(background(), 1000);
    try {
      const { record, statuses } = run(ctx, () => intercept());
      const metadata = new grpc.Metadata();
      metadata.set('ctx-cancel-reason', 'deadline_exceeded db query');
      record.listener?.onReceiveStatus?.({ code: grpc.status.DEADLINE_EXCEEDED, details: 'late', metadata });
      const status = statuses[0] as grpc.StatusObject & { cause: unknown };
      assert.deepEqual(status.cause, { code: 'deadline_exceeded', message: 'db query' });
      const error = toContextError(Object.assign(new Error('4 DEADLINE_EXCEEDED: late'), status));
      assert.ok(error instanceof DeadlineExceededError);
      assert.equal(error.message, 'deadline_exceeded: db query');
      assert.equal((error as unknown as grpc.ServiceError).details, 'late');
      // Ended remotely, not by the context: later cancelling it does nothing to the call.
      ctx.cancel();
      assert.equal(record.cancelled, undefined);
    } finally {
      ctx.cancel();
    }
  });

  test('other statuses pass untouched', () => {
    const { record, statuses } = intercept();
    const status = { code: grpc.status.UNAVAILABLE, details: 'down', metadata: new grpc.Metadata() };
    record.listener?.onReceiveStatus?.(status);
    assert.equal(statuses[0], status);
  });
});

test('grpcStatusFor', () => {
  assert.equal(grpcStatusFor('deadline_exceeded'), grpc.status.DEADLINE_EXCEEDED);
  for (const code of ['cancelled', 'upstream_cancelled', 'client_disconnected', 'shutdown', 'out_of_stock']) {
    assert.equal(grpcStatusFor(code), grpc.status.CANCELLED);
  }
});

describe('wrapService', () => {
  const metadata = () => new grpc.Metadata();

  function unaryCall() {
    return { metadata: metadata(), emit: () => true } as unknown as grpc.ServerUnaryCall<unknown, unknown>;
  }

  test('keeps other properties and binds `this`, prototype methods included', () => {
    class Impl {
      prefix = 'hello';
      greet(_call: unknown, callback: (e: unknown, v?: unknown) => void) {
        callback(null, `${this.prefix} world`);
      }
    }
    const wrapped = wrapService(new Impl());
    assert.equal(wrapped.prefix, 'hello');
    let answer: unknown;
    wrapped.greet(unaryCall(), (_e, v) => {
      answer = v;
    });
    assert.equal(answer, 'hello world');
  });

  test('a returned value (or promise of one) answers the call', async () => {
    const answers: unknown[] = [];
    const wrapped = wrapService({ sync: () => ({ a: 1 }), later: async () => ({ b: 2 }) });
    const callback = (_e: unknown, v: unknown) => answers.push(v);
    (wrapped.sync as unknown as grpc.handleUnaryCall<unknown, unknown>)(unaryCall(), callback);
    (wrapped.later as unknown as grpc.handleUnaryCall<unknown, unknown>)(unaryCall(), callback);
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(answers, [{ a: 1 }, { b: 2 }]);
  });

  test('errors become statuses: context errors by cause, grpc ones as they are, others UNKNOWN', async () => {
    const errors: Record<string, unknown> = {};
    const wrapped = wrapService({
      deadline: async () => {
        throw new DeadlineExceededError({ code: 'deadline_exceeded' });
      },
      reason: (_call: unknown, cb: (e: unknown) => void) => cb(new CancelledError({ code: 'out_of_stock' })),
      grpcError: () => {
        throw Object.assign(new Error('nope'), { code: grpc.status.NOT_FOUND, details: 'nope' });
      },
      other: async () => {
        throw new TypeError('secret internals');
      },
    });
    for (const [name, handler] of Object.entries(wrapped)) {
      (handler as unknown as grpc.handleUnaryCall<unknown, unknown>)(unaryCall(), (e) => {
        errors[name] = e;
      });
    }
    await new Promise((resolve) => setImmediate(resolve));
    const { deadline, reason, grpcError, other } = errors as Record<string, grpc.StatusObject>;
    assert.equal(deadline?.code, grpc.status.DEADLINE_EXCEEDED);
    assert.deepEqual(deadline?.metadata.get('ctx-cancel-reason'), ['deadline_exceeded']);
    assert.equal(reason?.code, grpc.status.CANCELLED);
    assert.deepEqual(reason?.metadata.get('ctx-cancel-reason'), ['out_of_stock']);
    assert.equal(grpcError?.code, grpc.status.NOT_FOUND);
    assert.deepEqual(other, { code: grpc.status.UNKNOWN, details: 'Unknown error' });
  });

  test('a stream handler that rejects emits the status as an error', async () => {
    const emitted: unknown[] = [];
    const call = {
      metadata: metadata(),
      writableEnded: false,
      destroyed: false,
      emit: (event: string, value: unknown) => emitted.push([event, value]),
    };
    const wrapped = wrapService({
      stream: async () => {
        throw new CancelledError({ code: 'shutdown' });
      },
    });
    (wrapped.stream as unknown as grpc.handleServerStreamingCall<unknown, unknown>)(
      call as unknown as grpc.ServerWritableStream<unknown, unknown>,
    );
    await new Promise((resolve) => setImmediate(resolve));
    const [event, status] = emitted[0] as [string, grpc.StatusObject];
    assert.equal(event, 'error');
    assert.equal(status.code, grpc.status.CANCELLED);
  });
});
