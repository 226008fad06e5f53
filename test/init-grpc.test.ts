/**
 * init() with tracing off and grpc-js left unchanged: generated clients and plain servers get the
 * interceptors of adapters/grpc (budget sent, cancellation, the call's context in the handler),
 * with per-method budgets, and servers the raised HTTP/2 reset guard.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { init } from '../init/index.ts';

const telemetry = init({
  tracing: false,
  grpc: { budgetMs: (path) => (path.endsWith('/Unary') ? undefined : 100) },
});
after(() => telemetry.shutdown());

const grpc = await import('@grpc/grpc-js');
const { probe } = await import('./fixtures/init/probe.ts');
const { background, current, withCancel, withTimeout } = await import('../sdk/context.ts');
const { CancelledError, DeadlineExceededError } = await import('../sdk/index.ts');

type Callback = (error: { code: number } | null, response?: Record<string, unknown>) => void;
const slow = { ...probe.unary, path: '/ctxflow.test.Probe/Slow' };
const service = { unary: probe.unary, slow };

const cancelled: string[] = [];
// Resolved when the slow handler has started: cancelling before that would test nothing.
let started: () => void = () => {};
const server = new grpc.Server();
server.addService(service, {
  unary(call: { metadata: { get(key: string): unknown[] } }, callback: Callback) {
    callback(null, {
      remaining: current().remaining(),
      ctxTimeout: call.metadata.get('ctx-timeout')[0] ?? null,
    });
  },
  slow(_call: unknown, callback: Callback) {
    const ctx = current();
    ctx.onDone((error) => cancelled.push(error.cause.code));
    started();
    setTimeout(() => callback(null, { remaining: ctx.remaining() }), 2000).unref();
  },
});
const port = await new Promise<number>((resolve, reject) =>
  server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (error, bound) =>
    error ? reject(error) : resolve(bound),
  ),
);
after(() => server.forceShutdown());
const Client = grpc.makeGenericClientConstructor(service, 'Probe');
const client = new Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure()) as unknown as Record<
  'unary' | 'slow',
  (request: object, callback: Callback) => void
>;
after(() => (client as unknown as { close(): void }).close());

function call(
  method: 'unary' | 'slow',
): Promise<{ error: { code: number } | null; response?: Record<string, unknown> }> {
  return new Promise((resolve) => client[method]({}, (error, response) => resolve({ error, response })));
}

test('the caller’s budget reaches the handler, less the reserve', async () => {
  const ctx = withTimeout(background(), 1000);
  const { error, response } = await ctx.run(() => call('unary'));
  ctx.cancel();
  assert.equal(error, null);
  const remaining = response?.remaining as number;
  assert.ok(remaining > 800 && remaining < 1000, `remaining ${remaining}`);
  // grpc-timeout carries the budget: ctx-timeout would repeat it.
  assert.equal(response?.ctxTimeout, null);
});

test('cancelling the caller cancels the call and the handler’s context', async () => {
  const ctx = withCancel(background());
  const handlerStarted = new Promise<void>((resolve) => {
    started = resolve;
  });
  const pending = ctx.run(() => call('slow'));
  await handlerStarted;
  ctx.cancel();
  const { error } = await pending;
  assert.equal(error?.code, grpc.status.CANCELLED);
  assert.ok(error instanceof CancelledError, 'a generated client gets the typed errors');
  for (let i = 0; i < 100 && cancelled.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
  assert.deepEqual(cancelled, ['upstream_cancelled']);
});

test('a per-method budget ends the call with DEADLINE_EXCEEDED', async () => {
  cancelled.length = 0;
  const started = performance.now();
  const { error } = await call('slow');
  assert.equal(error?.code, grpc.status.DEADLINE_EXCEEDED);
  assert.ok(error instanceof DeadlineExceededError, String(error));
  assert.ok(performance.now() - started < 1500);
  assert.deepEqual(cancelled, ['deadline_exceeded']);
});

test('servers get the raised HTTP/2 reset guard (resetGuard()) at their first addService', () => {
  const options = (server as unknown as { commonServerOptions: Record<string, unknown> }).commonServerOptions;
  assert.equal(options.streamResetBurst, 10_000);
  assert.equal(options.streamResetRate, 1_000);
});
