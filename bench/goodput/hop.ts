// One hop of the goodput chain, in its own process: A and B (express, fetch to the next hop), C
// (express, gRPC to D), D (gRPC: a backend with GOODPUT_POOL workers, each call holding one for
// GOODPUT_STEPS steps of CPU work and a wait). GOODPUT_CTXFLOW=1 adds ctxflow on every side;
// GOODPUT_RESET_GUARD=1 gives D's server resetGuard(). Reports its port over IPC when listening,
// and its counters when asked.
import type { AddressInfo } from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { current } from 'ctxflow';
import { deadlines, errorHandler } from 'ctxflow/express';
import { fetch as ctxFetch } from 'ctxflow/fetch';
import { clientOptions, createServer, serverInterceptor, wrapService } from 'ctxflow/grpc';
import express from 'express';

const role = process.env.GOODPUT_ROLE ?? 'D';
const next = process.env.GOODPUT_NEXT ?? '';
const withCtxflow = process.env.GOODPUT_CTXFLOW === '1';
const resetGuard = process.env.GOODPUT_RESET_GUARD === '1';
const POOL = Number(process.env.GOODPUT_POOL ?? 16);
const STEPS = Number(process.env.GOODPUT_STEPS ?? 12);
const STEP_MS = Number(process.env.GOODPUT_STEP_MS ?? 10);
const STEP_CPU_MS = Number(process.env.GOODPUT_STEP_CPU_MS ?? 0.05);

const counters = { started: 0, completed: 0, cut: 0, errors: 0, firstError: '' };

const identity = (value: Buffer): Buffer => value;
const workService = {
  work: {
    path: '/ctxflow.bench.Goodput/Work',
    requestStream: false,
    responseStream: false,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
  },
} satisfies grpc.ServiceDefinition;
const WorkClient = grpc.makeGenericClientConstructor(workService, 'Goodput');

function spin(ms: number): void {
  const until = performance.now() + ms;
  while (performance.now() < until);
}

/** Resolves after `ms`, or at once (false) when `signal` aborts. */
function wait(ms: number, signal: AbortSignal | undefined): Promise<boolean> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve(false);
    const onAbort = () => {
      clearTimeout(timer);
      resolve(false);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve(true);
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

// The backend's workers: a call waits for a free one, in arrival order.
let free = POOL;
const queue: Array<() => void> = [];
function acquire(signal: AbortSignal | undefined): Promise<boolean> {
  if (free > 0) {
    free--;
    return Promise.resolve(true);
  }
  return new Promise((resolve) => {
    const take = () => {
      signal?.removeEventListener('abort', leave);
      resolve(true);
    };
    const leave = () => {
      const index = queue.indexOf(take);
      if (index !== -1) queue.splice(index, 1);
      resolve(false);
    };
    queue.push(take);
    signal?.addEventListener('abort', leave, { once: true });
  });
}
function release(): void {
  const take = queue.shift();
  if (take === undefined) free++;
  else take();
}

/** The backend's work for one call; false when it was cut short by `signal`. */
async function work(signal: AbortSignal | undefined): Promise<boolean> {
  counters.started++;
  if (!(await acquire(signal))) {
    counters.cut++;
    return false;
  }
  try {
    for (let step = 0; step < STEPS; step++) {
      spin(STEP_CPU_MS);
      if (!(await wait(STEP_MS, signal))) {
        counters.cut++;
        return false;
      }
    }
    counters.completed++;
    return true;
  } finally {
    release();
  }
}

function report(): void {
  process.on('message', (message: { type: string }) => {
    if (message.type === 'counters') {
      process.send?.({ ...counters });
      counters.started = counters.completed = counters.cut = counters.errors = 0;
      counters.firstError = '';
    }
  });
  process.on('disconnect', () => process.exit(0));
}

if (role === 'D') {
  const server = withCtxflow
    ? resetGuard
      ? createServer({ interceptors: [serverInterceptor()] })
      : new grpc.Server({ interceptors: [serverInterceptor()] })
    : new grpc.Server();
  const implementation = withCtxflow
    ? wrapService({
        async work() {
          const ctx = current();
          await work(ctx.signal);
          ctx.throwIfDone();
          return Buffer.from('{"hop":"D"}');
        },
      })
    : {
        work(_call: unknown, callback: grpc.sendUnaryData<Buffer>) {
          work(undefined).then(() => callback(null, Buffer.from('{"hop":"D"}')));
        },
      };
  server.addService(workService, implementation as grpc.UntypedServiceImplementation);
  server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (error, port) => {
    if (error) throw error;
    process.send?.({ port });
  });
  report();
} else {
  const app = express();
  app.disable('x-powered-by');
  app.disable('etag');
  if (withCtxflow) app.use(deadlines());
  if (role === 'C') {
    type Work = (request: Buffer, callback: (error: Error | null, answer?: Buffer) => void) => void;
    const client = new WorkClient(
      next,
      grpc.credentials.createInsecure(),
      withCtxflow ? clientOptions() : {},
    );
    const work = (client as unknown as { work: Work }).work.bind(client);
    const call = (): Promise<Buffer> =>
      new Promise((resolve, reject) => {
        work(Buffer.alloc(0), (error, answer) => (error ? reject(error) : resolve(answer as Buffer)));
      });
    app.get('/', async (_req, res) => {
      res.type('json').send(await call());
    });
  } else {
    const send = withCtxflow ? ctxFetch : globalThis.fetch;
    app.get('/', async (_req, res) => {
      const answer = await send(`${next}/`);
      if (!answer.ok) {
        res.status(answer.status).send(await answer.text());
        return;
      }
      res.type('json').send(await answer.text());
    });
  }
  const onError = (error: unknown) => {
    counters.errors++;
    counters.firstError ||= String((error as Error)?.message ?? error);
  };
  if (withCtxflow) app.use(errorHandler({ onError }));
  else {
    app.use((error: unknown, _req: express.Request, res: express.Response, _next: express.NextFunction) => {
      onError(error);
      if (!res.headersSent) res.status(500).send('error');
    });
  }
  const server = app.listen(0, '127.0.0.1', () => {
    process.send?.({ port: (server.address() as AddressInfo).port });
  });
  server.keepAliveTimeout = 60_000;
  report();
}
