// What each unary call allocates, client and server in one process: the inspector's sampling heap
// profiler (with the objects young- and old-generation collections freed) over BENCH_CALLS calls,
// bytes per call by the function that allocated them, for grpc-js alone and with ctxflow
// (`clientOptions()` and `wrapService()`, each call under a fresh 5 s context). Not part of
// `npm run bench:grpc`:
//   node --conditions=ctxflow-source bench/grpc/allocations.ts
// Lists the BENCH_ALLOC_TOP (20) functions that allocate the most more with ctxflow than without,
// then ctxflow's own; BENCH_CALLS (5000) calls are sampled, every BENCH_ALLOC_INTERVAL (128) bytes
// (smaller: more exact, and far more memory: every sample is kept).
import { Session } from 'node:inspector/promises';
import * as grpc from '@grpc/grpc-js';
import { context as otel, ROOT_CONTEXT } from '@opentelemetry/api';
import { background, run, withTimeout } from 'ctxflow';
import { clientOptions, wrapService } from 'ctxflow/grpc';
import { benchService } from './service.ts';

const CALLS = Number(process.env.BENCH_CALLS ?? 5_000);
const TOP = Number(process.env.BENCH_ALLOC_TOP ?? 20);
const INTERVAL = Number(process.env.BENCH_ALLOC_INTERVAL ?? 128);
const REQUEST = Buffer.from('{"n":1}');

const implementation = {
  unary(call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) {
    callback(null, call.request);
  },
  hang() {},
};

type Client = grpc.Client & {
  unary(
    request: Buffer,
    options: grpc.CallOptions,
    callback: (error: grpc.ServiceError | null) => void,
  ): grpc.ClientUnaryCall;
};
const BenchClient = grpc.makeGenericClientConstructor(benchService, 'Bench');

interface Setup {
  label: string;
  ctxflow: boolean;
  server: grpc.Server;
  client: Client;
}

async function setUp(label: string, ctxflow: boolean): Promise<Setup> {
  const server = new grpc.Server();
  const service = ctxflow ? wrapService(implementation) : implementation;
  server.addService(benchService, service as unknown as grpc.UntypedServiceImplementation);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (error, bound) =>
      error ? reject(error) : resolve(bound),
    ),
  );
  const client = new BenchClient(
    `127.0.0.1:${port}`,
    grpc.credentials.createInsecure(),
    ctxflow ? clientOptions() : {},
  ) as unknown as Client;
  await new Promise<void>((resolve, reject) =>
    client.waitForReady(Date.now() + 5000, (error) => (error ? reject(error) : resolve())),
  );
  return { label, ctxflow, server, client };
}

const NO_OPTIONS: grpc.CallOptions = {};

function call({ ctxflow, client }: Setup): Promise<void> {
  return new Promise((resolve, reject) => {
    otel.with(ROOT_CONTEXT, () => {
      if (!ctxflow) {
        client.unary(REQUEST, NO_OPTIONS, (error) => (error ? reject(error) : resolve()));
        return;
      }
      const ctx = withTimeout(background(), 5000);
      run(ctx, () =>
        client.unary(REQUEST, NO_OPTIONS, (error) => {
          ctx.cancel();
          if (error) reject(error);
          else resolve();
        }),
      );
    });
  });
}

async function loop(setup: Setup, calls: number): Promise<void> {
  let started = 0;
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      while (started++ < calls) await call(setup);
    }),
  );
}

interface ProfileNode {
  callFrame: { functionName: string; url: string; lineNumber: number };
  selfSize: number;
  children: ProfileNode[];
}

/** Bytes allocated by each function (name and place), summed over the profile's tree. */
function bytesByFunction(root: ProfileNode): Map<string, number> {
  const out = new Map<string, number>();
  const visit = (node: ProfileNode) => {
    const { functionName, url, lineNumber } = node.callFrame;
    const file = url.replace(/^.*\/(node_modules\/|adapters\/|sdk\/|bench\/)/, '$1');
    const key = `${functionName || '(anonymous)'} ${file}:${lineNumber + 1}`;
    out.set(key, (out.get(key) ?? 0) + node.selfSize);
    for (const child of node.children) visit(child);
  };
  visit(root);
  return out;
}

const session = new Session();
session.connect();
const setups = [await setUp('grpc-js', false), await setUp('grpc-js + ctxflow', true)];
for (const setup of setups) await loop(setup, CALLS / 2);
const totals = new Map<string, number>();
const profiles = new Map<boolean, Map<string, number>>();
for (const setup of setups) {
  await session.post('HeapProfiler.startSampling', {
    samplingInterval: INTERVAL,
    includeObjectsCollectedByMajorGC: true,
    includeObjectsCollectedByMinorGC: true,
  });
  await loop(setup, CALLS);
  const { profile } = (await session.post('HeapProfiler.stopSampling')) as unknown as {
    profile: { head: ProfileNode };
  };
  const byFunction = bytesByFunction(profile.head);
  totals.set(setup.label, [...byFunction.values()].reduce((x, y) => x + y, 0) / CALLS);
  profiles.set(setup.ctxflow, byFunction);
}
const bare = profiles.get(false) as Map<string, number>;
const withCtxflow = profiles.get(true) as Map<string, number>;
const more = [...withCtxflow].map(([key, bytes]): [string, number] => [key, bytes - (bare.get(key) ?? 0)]);
more.sort((a, b) => b[1] - a[1]);
const ctxflowRows = [...withCtxflow].filter(([key]) => /adapters\/|sdk\//.test(key));
ctxflowRows.sort((a, b) => b[1] - a[1]);
console.log(
  `node ${process.version}, one process, 16 concurrent calls, ${CALLS} calls sampled every ${INTERVAL} bytes`,
);
for (const [label, bytes] of totals)
  console.log(`${label}: ${bytes.toFixed(0)} bytes per call (client + server)`);
console.log('allocating more with ctxflow (bytes per call):');
for (const [key, bytes] of more.slice(0, TOP))
  console.log(`  ${(bytes / CALLS).toFixed(0).padStart(5)} B  ${key}`);
const ctxflowOwn = ctxflowRows.reduce((sum, [, bytes]) => sum + bytes, 0) / CALLS;
console.log(`allocated in ctxflow's own functions: ${ctxflowOwn.toFixed(0)} bytes per call`);
for (const [key, bytes] of ctxflowRows.slice(0, TOP)) {
  console.log(`  ${(bytes / CALLS).toFixed(0).padStart(5)} B  ${key}`);
}
for (const { client, server } of setups) {
  client.close();
  server.forceShutdown();
}
session.disconnect();
