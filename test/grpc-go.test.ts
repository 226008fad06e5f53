/**
 * Interop with grpc-go (v1.76): a ctxflow Node client calling a Go server, and a Go client calling
 * a ctxflow Node server. The Go peer (test/grpc-go) is built once per source hash and cached under
 * ${CTXFLOW_CACHE:-~/.cache/ctxflow}/bin. Without Go the tests are skipped, except under CI=true.
 */
import assert from 'node:assert/strict';
import { type ChildProcessWithoutNullStreams, execFile, spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, describe, type TestContext, test } from 'node:test';
import { promisify } from 'node:util';
import type * as grpc from '@grpc/grpc-js';
import type { GrpcContextError } from '../adapters/grpc/index.ts';
import { background, type Context, current, run, withTimeout } from '../sdk/context.ts';
import { DeadlineExceededError } from '../sdk/errors.ts';
import {
  assertEndedBy,
  deferred,
  type Message,
  type ProbeClient,
  probeClient,
  ready,
  startProbeServer,
  type TestServer,
  unary,
} from './support/grpc.ts';
import { unavailable } from './support/infra.ts';

const run$ = promisify(execFile);
const SOURCE_DIR = path.join(import.meta.dirname, 'grpc-go');
const SOURCES = ['main.go', 'go.mod', 'go.sum'];

function cacheDir(): string {
  return process.env.CTXFLOW_CACHE || path.join(os.homedir(), '.cache', 'ctxflow');
}

/** Builds the Go peer unless a binary for these sources is cached; its path, or why not. */
async function goPeer(): Promise<{ binary: string } | { missing: string }> {
  const version = spawnSync('go', ['version'], { encoding: 'utf8' });
  if (version.error !== undefined || version.status !== 0) {
    return { missing: 'go not found on PATH: the grpc-go interop tests need Go (>= 1.24)' };
  }
  const hash = createHash('sha256');
  hash.update(version.stdout);
  for (const file of SOURCES) hash.update(fs.readFileSync(path.join(SOURCE_DIR, file)));
  const binary = path.join(cacheDir(), 'bin', `grpc-go-peer-${hash.digest('hex').slice(0, 16)}`);
  if (fs.existsSync(binary)) return { binary };
  fs.mkdirSync(path.dirname(binary), { recursive: true });
  const partial = `${binary}.${process.pid}.tmp`;
  await run$('go', ['build', '-mod=readonly', '-o', partial, '.'], {
    cwd: SOURCE_DIR,
    env: { ...process.env, CGO_ENABLED: '0' },
    timeout: 300_000,
  });
  fs.renameSync(partial, binary);
  return { binary };
}

/** Events the Go server printed, as they come. */
class GoServer {
  readonly events: Message[] = [];
  #waiters: { match: (e: Message) => boolean; resolve: (e: Message) => void }[] = [];
  readonly child: ChildProcessWithoutNullStreams;
  port = 0;

  constructor(binary: string) {
    this.child = spawn(binary, ['server'], { stdio: 'pipe' });
  }

  async start(): Promise<void> {
    const lines = createInterface({ input: this.child.stdout });
    const listening = deferred<number>();
    lines.on('line', (line) => {
      const port = /^listening (\d+)$/.exec(line);
      if (port) {
        listening.resolve(Number(port[1]));
        return;
      }
      const event = JSON.parse(line) as Message;
      this.events.push(event);
      this.#waiters = this.#waiters.filter((w) => {
        if (!w.match(event)) return true;
        w.resolve(event);
        return false;
      });
    });
    this.port = await Promise.race([
      listening.promise,
      new Promise<never>((_, reject) =>
        this.child.once('exit', (code) => reject(new Error(`go server exited ${code}`))),
      ),
    ]);
  }

  /** The first event (past or future) with this `event` and `id`. */
  event(event: string, id: string, timeoutMs = 5000): Promise<Message> {
    const match = (e: Message) => e.event === event && e.id === id;
    const seen = this.events.find(match);
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no ${event} event for ${id}`)), timeoutMs);
      this.#waiters.push({
        match,
        resolve: (e) => {
          clearTimeout(timer);
          resolve(e);
        },
      });
    });
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null) return;
    const exited = new Promise((resolve) => this.child.once('exit', resolve));
    this.child.stdin.end();
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 2000);
    await exited;
    clearTimeout(timer);
  }
}

/** Runs the Go client once; its one JSON line. */
async function goClient(binary: string, args: string[]): Promise<Message> {
  const { stdout } = await run$(binary, ['client', ...args], { timeout: 20_000 });
  return JSON.parse(stdout.trim()) as Message;
}

let peer: { binary: string } | { missing: string } | undefined;
let peerError: unknown;

async function binaryFor(t: TestContext): Promise<string | undefined> {
  if (peer === undefined && peerError === undefined) {
    try {
      peer = await goPeer();
    } catch (error) {
      peerError = error;
    }
  }
  if (peerError !== undefined) throw peerError;
  if (peer !== undefined && 'missing' in peer) return unavailable(t, peer.missing);
  return peer?.binary;
}

describe('grpc-go interop: ctxflow client → Go server', () => {
  let go: GoServer | undefined;
  let client: ProbeClient | undefined;

  before(async () => {
    const built = await goPeer().catch(() => undefined);
    if (built === undefined || 'missing' in built) return;
    go = new GoServer(built.binary);
    await go.start();
    client = probeClient(`127.0.0.1:${go.port}`);
    await ready(client);
    // Warm the channel and both ends.
    for (let i = 0; i < 10; i++)
      await run(withTimeout(background(), 1000), () => unary(client as ProbeClient, { id: `warm${i}` }));
  });

  after(async () => {
    client?.close();
    await go?.stop();
  });

  test('the Go server sees a deadline of the remaining budget minus the reserve', async (t) => {
    if ((await binaryFor(t)) === undefined || client === undefined || go === undefined) return;
    const ctx = withTimeout(background(), 1000);
    try {
      const sentAt = Date.now();
      const answer = await run(ctx, () => unary(client as ProbeClient, { id: 'budget' }));
      const expected = (ctx.deadline as number) - 5 - sentAt;
      assert.equal(answer.hasDeadline, true);
      assert.ok(
        answer.remainingMs <= expected && answer.remainingMs >= expected - 20,
        `Go saw ${answer.remainingMs} ms, expected about ${expected}`,
      );
      // grpc-timeout alone carries the budget (Go reads it as ctx.Deadline()): no ctx-timeout beside it.
      assert.equal(answer.metadata['ctx-timeout'], undefined);
    } finally {
      ctx.cancel();
    }
  });

  test('cancelling the Node context cancels the Go handler', async (t) => {
    if ((await binaryFor(t)) === undefined || client === undefined || go === undefined) return;
    const ctx = withTimeout(background(), 5000);
    const pending = run(ctx, () => unary(client as ProbeClient, { id: 'cancel', sleepMs: 10_000 })).catch(
      (e: unknown) => e,
    );
    await go.event('start', 'cancel');
    const cancelledAt = Date.now();
    ctx.cancel({ code: 'shutdown' });
    const done = await go.event('done', 'cancel');
    assert.equal(done.err, 'context canceled');
    assertEndedBy(await pending, ctx);
    assert.ok(Date.now() - cancelledAt < 1000);
  });

  test('the Node deadline ends the Go handler with deadline exceeded', async (t) => {
    if ((await binaryFor(t)) === undefined || client === undefined || go === undefined) return;
    const ctx = withTimeout(background(), 200);
    try {
      const started = Date.now();
      const error = (await run(ctx, () =>
        unary(client as ProbeClient, { id: 'deadline', sleepMs: 10_000 }),
      ).catch((e: unknown) => e)) as GrpcContextError;
      assert.ok(error instanceof DeadlineExceededError, String(error));
      const done = await go.event('done', 'deadline');
      // The Go server's deadline and the RST_STREAM the client sends at its own deadline arrive
      // together (grpc-timeout is relative: the server counts from arrival): either may win.
      assert.match(done.err, /^context (deadline exceeded|canceled)$/);
      const elapsed = Date.now() - started;
      assert.ok(elapsed >= 190 && elapsed < 2000, `ended after ${elapsed} ms`);
    } finally {
      ctx.cancel();
    }
  });
});

describe('grpc-go interop: Go client → ctxflow server', () => {
  let server: TestServer;
  const seen: { ctx: Context; remaining: number; signal: AbortSignal }[] = [];
  let hanging = deferred<void>();

  before(async () => {
    server = await startProbeServer({
      unary: async (call: grpc.ServerUnaryCall<Message, Message>) => {
        const ctx = current();
        const record = { ctx, remaining: ctx.remaining(), signal: ctx.signal };
        seen.push(record);
        if (call.request.hang) {
          hanging.resolve();
          await new Promise((resolve) => record.signal.addEventListener('abort', resolve));
        }
        return { remaining: record.remaining };
      },
    });
  });

  after(() => server.close());

  /** Runs the Go client against the Node server's Probe/Unary method. */
  const goUnary = (binary: string, args: string[]) =>
    goClient(binary, ['-addr', server.address, '-method', '/ctxflow.test.Probe/Unary', ...args]);

  test('the Node handler sees the Go deadline as its budget', async (t) => {
    const binary = await binaryFor(t);
    if (binary === undefined) return;
    const result = await goUnary(binary, ['-timeout', '2s']);
    assert.equal(result.code, 'OK', JSON.stringify(result));
    const remaining = JSON.parse(result.response).remaining;
    assert.ok(remaining <= 2000 && remaining >= 1500, `handler saw ${remaining} ms`);
    assert.equal(seen.at(-1)?.ctx.cause?.code, 'cancelled', 'released after the call');
  });

  test('a Go client cancel reaches the Node handler as upstream_cancelled', async (t) => {
    const binary = await binaryFor(t);
    if (binary === undefined) return;
    hanging = deferred<void>();
    const result = await goUnary(binary, [
      '-timeout',
      '5s',
      '-cancel-after',
      '300ms',
      '-request',
      '{"hang":true}',
    ]);
    await hanging.promise;
    assert.equal(result.code, 'Canceled', JSON.stringify(result));
    const handler = seen.at(-1);
    assert.ok(handler);
    assert.ok(handler.remaining <= 5000 && handler.remaining > 4500, `handler saw ${handler.remaining} ms`);
    assert.equal(handler.ctx.cause?.code, 'upstream_cancelled');
    assert.equal(handler.signal.aborted, true);
  });

  test('a Go deadline reaches the Node handler as deadline_exceeded', async (t) => {
    const binary = await binaryFor(t);
    if (binary === undefined) return;
    hanging = deferred<void>();
    const result = await goUnary(binary, ['-timeout', '250ms', '-request', '{"hang":true}']);
    assert.equal(result.code, 'DeadlineExceeded', JSON.stringify(result));
    await hanging.promise;
    const handler = seen.at(-1);
    assert.ok(handler);
    await new Promise((resolve) => setTimeout(resolve, 20));
    assert.equal(handler.ctx.cause?.code, 'deadline_exceeded');
    assert.equal(handler.signal.aborted, true);
  });
});
