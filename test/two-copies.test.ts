/**
 * Two copies of ctxflow in one process, as a monorepo or a nested dependency installs them: the
 * sources copied to a second path and loaded beside the project's own. Contexts of one copy are
 * parents and `current()` of the other; the errors of one are recognised by the other, across an
 * HTTP and a gRPC hop.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import express from 'express';
import { clientOptions } from '../adapters/grpc/index.ts';
import { deadlines, errorHandler } from '../adapters/http/express.ts';
import { fetch } from '../adapters/http/fetch.ts';
import * as a from '../sdk/index.ts';
import { type Message, type ProbeClient, probeService, ready, unary } from './support/grpc.ts';
import { type Listening, listen, sleep } from './support/http.ts';

const ROOT = path.join(import.meta.dirname, '..');
const COPY = path.join(ROOT, '.cache', 'copies', String(process.pid));

type Sdk = typeof import('../sdk/index.ts');
type Grpc = typeof import('../adapters/grpc/index.ts');
type Fetch = typeof import('../adapters/http/fetch.ts');
let b: { sdk: Sdk; grpc: Grpc; fetch: Fetch };

before(async () => {
  for (const dir of ['sdk', 'adapters'])
    fs.cpSync(path.join(ROOT, dir), path.join(COPY, dir), { recursive: true });
  const load = (file: string) => import(path.join(COPY, file));
  b = {
    sdk: await load('sdk/index.ts'),
    grpc: await load('adapters/grpc/index.ts'),
    fetch: await load('adapters/http/fetch.ts'),
  };
  assert.notEqual(b.sdk.background, a.background, 'a second copy, not the same modules');
});

after(() => fs.rmSync(COPY, { recursive: true, force: true }));

describe('two copies of ctxflow in one process', () => {
  let slow: Listening;
  before(async () => {
    // A downstream service whose own budget runs out: 504 with ctx-cancel-reason.
    const app = express();
    app.use(deadlines({ budgetMs: 30 }));
    app.get('/', async (_req, res) => {
      await sleep(2_000);
      res.send('late');
    });
    app.use(errorHandler());
    slow = await listen(app);
  });
  after(() => slow.close());

  test('a context of one copy is current() and a parent in the other; its end reaches the child', () => {
    const parent = a.withTimeout(a.background(), 5_000);
    a.run(parent, () => {
      assert.equal(b.sdk.current(), parent);
      const child = b.sdk.withTimeout(b.sdk.current(), 60_000);
      assert.ok((child.deadline as number) <= (parent.deadline as number), 'never more than the parent');
      const aborted: unknown[] = [];
      child.signal.addEventListener('abort', () => aborted.push(child.signal.reason));
      parent.cancel({ code: 'shutdown', message: 'draining' });
      assert.deepEqual(child.cause, { code: 'shutdown', message: 'draining' });
      assert.equal(aborted.length, 1);
      assert.ok(aborted[0] instanceof a.CancelledError, 'the other copy recognises the error');
      assert.ok(a.isContextDoneError(aborted[0]));
      assert.ok(!(aborted[0] instanceof a.DeadlineExceededError));
    });
  });

  test('HTTP: a downstream timeout raised by the other copy is answered 504 with its reason, not 500', async () => {
    const app = express();
    app.use(deadlines({ budgetMs: 2_000 }));
    app.get('/', async (_req, res) => {
      // The other copy's fetch, under this copy's context.
      const answer = await b.fetch.fetch(slow.url);
      res.send(await answer.text());
    });
    app.use(errorHandler({ onError: () => assert.fail('a context error is not an unexpected error') }));
    const front = await listen(app);
    try {
      const answer = await globalThis.fetch(front.url);
      assert.equal(answer.status, 504);
      assert.equal(answer.headers.get('ctx-cancel-reason'), 'deadline_exceeded');
    } finally {
      await front.close();
    }
  });

  test('gRPC: a server of one copy answers a timeout raised by the other as DEADLINE_EXCEEDED', async () => {
    const server = new grpc.Server({ interceptors: [b.grpc.serverInterceptor()] });
    server.addService(
      probeService,
      b.grpc.wrapService<grpc.UntypedServiceImplementation>({
        // This copy's fetch, in the other copy's call context.
        unary: async () => {
          const answer = await fetch(slow.url);
          return { text: await answer.text() };
        },
      }),
    );
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (error, bound) =>
        error ? reject(error) : resolve(bound),
      ),
    );
    const Client = grpc.makeGenericClientConstructor(probeService, 'Probe');
    const client = new Client(
      `127.0.0.1:${port}`,
      grpc.credentials.createInsecure(),
      clientOptions(),
    ) as ProbeClient;
    const ctx = a.withTimeout(a.background(), 5_000);
    try {
      await ready(client);
      const error = await a.run(ctx, () => unary(client, {} as Message)).catch((e: unknown) => e);
      assert.ok(error instanceof a.DeadlineExceededError, String(error));
      assert.ok(error instanceof b.sdk.DeadlineExceededError);
      assert.equal((error as grpc.ServiceError).code, grpc.status.DEADLINE_EXCEEDED);
      assert.deepEqual((error as a.ContextDoneError).cause, { code: 'deadline_exceeded' });
    } finally {
      ctx.cancel();
      client.close();
      server.forceShutdown();
    }
  });
});
