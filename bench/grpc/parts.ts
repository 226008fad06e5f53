// Where ctxflow's per-call cost goes, without OpenTelemetry: client and server in one process
// (pinned to one core when taskset is there), CPU per unary call for configurations that add one
// piece at a time, interleaved over rounds; medians. Not part of `npm run bench:grpc`:
//   node --conditions=ctxflow-source --expose-gc bench/grpc/parts.ts
// BENCH_PARTS (a regular expression) keeps the configurations whose label it matches, for profiles.
import { spawnSync } from 'node:child_process';
import { availableParallelism } from 'node:os';
import * as grpc from '@grpc/grpc-js';
import { context as otel, ROOT_CONTEXT } from '@opentelemetry/api';
import { background, run, withTimeout } from 'ctxflow';
import { clientOptions, serverInterceptor, wrapService } from 'ctxflow/grpc';
import { benchService } from './service.ts';

if (availableParallelism() >= 2 && spawnSync('taskset', ['-V']).status === 0) {
  spawnSync('taskset', ['-a', '-cp', '1', String(process.pid)], { stdio: 'ignore' });
}

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const CALLS = Number(process.env.BENCH_CALLS ?? 20_000);
const REQUEST = Buffer.from('{"n":1}');
const TRACEPARENT = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';

const implementation = {
  unary(call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) {
    callback(null, call.request);
  },
  hang() {},
};

interface Config {
  label: string;
  server: grpc.ServerOptions;
  service: grpc.UntypedServiceImplementation;
  client: grpc.ClientOptions;
  /** How each call is made: plain, with a deadline option, plus ctx-timeout by hand, or under a 5 s context. */
  call:
    | 'plain'
    | 'deadline'
    | 'deadline+metadata'
    | 'deadline+metadata+traceparent'
    | 'timeouts-by-hand'
    | 'context';
}

const plain = implementation as unknown as grpc.UntypedServiceImplementation;
/** An interceptor that does nothing: what grpc-js's interceptor machinery costs by itself. */
const noopInterceptor: grpc.ServerInterceptor = (_method, call) => new grpc.ServerInterceptingCall(call);
const wrapped = wrapService(implementation) as unknown as grpc.UntypedServiceImplementation;
const CONFIGS: Config[] = [
  { label: 'grpc-js', server: {}, service: plain, client: {}, call: 'plain' },
  { label: '+ deadline option', server: {}, service: plain, client: {}, call: 'deadline' },
  {
    label: '+ deadline, ctx-timeout by hand',
    server: {},
    service: plain,
    client: {},
    call: 'deadline+metadata',
  },
  {
    label: '+ deadline, ctx-timeout and traceparent by hand',
    server: {},
    service: plain,
    client: {},
    call: 'deadline+metadata+traceparent',
  },
  {
    label: 'a caller context (withTimeout + run), plain call',
    server: {},
    service: plain,
    client: {},
    call: 'context',
  },
  {
    label: '+ grpc-timeout and ctx-timeout by hand, no deadline option',
    server: {},
    service: plain,
    client: {},
    call: 'timeouts-by-hand',
  },
  { label: 'client: ctxflow', server: {}, service: plain, client: clientOptions(), call: 'context' },
  {
    label: 'server: a no-op interceptor',
    server: { interceptors: [noopInterceptor] },
    service: plain,
    client: {},
    call: 'deadline+metadata',
  },
  {
    label: 'server: ctxflow (wrapService)',
    server: {},
    service: wrapped,
    client: {},
    call: 'deadline+metadata',
  },
  {
    label: 'server: ctxflow (serverInterceptor + wrapService)',
    server: { interceptors: [serverInterceptor()] },
    service: wrapped,
    client: {},
    call: 'deadline+metadata',
  },
  {
    label: 'both: ctxflow',
    server: {},
    service: wrapped,
    client: clientOptions(),
    call: 'context',
  },
];

type Client = grpc.Client & {
  unary(
    request: Buffer,
    metadata: grpc.Metadata,
    options: grpc.CallOptions,
    callback: (error: grpc.ServiceError | null) => void,
  ): grpc.ClientUnaryCall;
};
const BenchClient = grpc.makeGenericClientConstructor(benchService, 'Bench');

interface Setup {
  config: Config;
  server: grpc.Server;
  client: Client;
}

async function setUp(config: Config): Promise<Setup> {
  const server = new grpc.Server(config.server);
  server.addService(benchService, config.service);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (error, bound) =>
      error ? reject(error) : resolve(bound),
    ),
  );
  const client = new BenchClient(
    `127.0.0.1:${port}`,
    grpc.credentials.createInsecure(),
    config.client,
  ) as unknown as Client;
  await new Promise<void>((resolve, reject) =>
    client.waitForReady(Date.now() + 5000, (error) => (error ? reject(error) : resolve())),
  );
  return { config, server, client };
}

function call({ config, client }: Setup): Promise<void> {
  return new Promise((resolve, reject) => {
    const done = (error: grpc.ServiceError | null) => (error ? reject(error) : resolve());
    otel.with(ROOT_CONTEXT, () => {
      const metadata = new grpc.Metadata();
      if (config.call === 'context') {
        const ctx = withTimeout(background(), 5000);
        run(ctx, () =>
          client.unary(REQUEST, metadata, {}, (error) => {
            ctx.cancel();
            done(error);
          }),
        );
        return;
      }
      const options =
        config.call === 'plain' || config.call === 'timeouts-by-hand' ? {} : { deadline: Date.now() + 5000 };
      if (config.call !== 'plain' && config.call !== 'deadline') metadata.set('ctx-timeout', '4995');
      if (config.call === 'deadline+metadata+traceparent') metadata.set('traceparent', TRACEPARENT);
      if (config.call === 'timeouts-by-hand') metadata.set('grpc-timeout', '4995m');
      client.unary(REQUEST, metadata, options, done);
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

const setups: Setup[] = [];
const only = new RegExp(process.env.BENCH_PARTS ?? '');
for (const config of CONFIGS.filter((c) => c.label === 'grpc-js' || only.test(c.label))) {
  setups.push(await setUp(config));
}
for (const setup of setups) await loop(setup, CALLS / 2);
const results = new Map<string, number[]>();
for (let round = 0; round < ROUNDS; round++) {
  for (const setup of setups) {
    (globalThis as { gc?: () => void }).gc?.();
    const before = process.cpuUsage();
    await loop(setup, CALLS);
    const used = process.cpuUsage(before);
    const list = results.get(setup.config.label) ?? [];
    list.push((used.user + used.system) / CALLS);
    results.set(setup.config.label, list);
  }
}
const median = (values: number[]) =>
  [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] as number;
const base = median(results.get('grpc-js') as number[]);
console.log(`node ${process.version}, one process, 16 concurrent calls, ${ROUNDS} rounds of ${CALLS} calls`);
console.log('| configuration | CPU µs per call, client + server (range) | over grpc-js |');
console.log('| --- | --- | --- |');
for (const [label, values] of results) {
  const m = median(values);
  console.log(
    `| ${label} | ${m.toFixed(1)} (${Math.min(...values).toFixed(1)}–${Math.max(...values).toFixed(1)}) | ${(m - base).toFixed(1)} |`,
  );
}
for (const { client, server } of setups) {
  client.close();
  server.forceShutdown();
}
