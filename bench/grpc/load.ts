// The load generator, one process per variant (BENCH_VARIANT, same preload as its server). On
// {type:'run'}: a closed loop of BENCH_CONCURRENCY unary calls for the warm-up, then for the
// measured window, each call started from ROOT_CONTEXT (with a 5 s deadline option for the
// `deadline` variant, the headers by hand for `headers` and `context` (in a context of its own for
// `context`), under a fresh 5 s context for `ctxflow`); replies with the count, latency quantiles and the server's CPU time over the window
// (from /proc/PID/stat). On {type:'cancel'}: sequential Hang calls, each cancelled once its first
// message arrived; replies with when each cancel was issued.
import * as grpc from '@grpc/grpc-js';
import { createContextKey, context as otel, ROOT_CONTEXT } from '@opentelemetry/api';
import { background, run, withCancel, withTimeout } from 'ctxflow';
import { clientOptions } from 'ctxflow/grpc';
import { ensureContextManager } from 'ctxflow/wire';
import { cpuSeconds, machineBusySeconds } from '../support/stats.ts';
import { traceparent } from '../support/traceparent.ts';
import { benchService, type Variant, WITH_CTXFLOW } from './service.ts';

const variant = (process.env.BENCH_VARIANT ?? 'bare') as Variant;
const withCtxflow = WITH_CTXFLOW.includes(variant);
const concurrency = Number(process.env.BENCH_CONCURRENCY ?? 32);

const BenchClient = grpc.makeGenericClientConstructor(benchService, 'Bench');
type Client = InstanceType<typeof BenchClient> & {
  unary(
    request: Buffer,
    options: grpc.CallOptions,
    callback: (error: grpc.ServiceError | null, response?: Buffer) => void,
  ): grpc.ClientUnaryCall;
  unary(
    request: Buffer,
    metadata: grpc.Metadata,
    options: grpc.CallOptions,
    callback: (error: grpc.ServiceError | null, response?: Buffer) => void,
  ): grpc.ClientUnaryCall;
  hang(request: Buffer): grpc.ClientReadableStream<Buffer>;
};
let client: Client;

const REQUEST = Buffer.from('{"n":1}');
const CALL_KEY = createContextKey('bench.call');
if (variant === 'context') ensureContextManager();
const NO_OPTIONS: grpc.CallOptions = {};

function call(): Promise<void> {
  return new Promise((resolve, reject) => {
    otel.with(ROOT_CONTEXT, () => {
      if (variant === 'deadline') {
        client.unary(REQUEST, { deadline: Date.now() + 5000 }, (error) =>
          error ? reject(error) : resolve(),
        );
        return;
      }
      if (variant === 'headers' || variant === 'context') {
        // What ctxflow sends under a trace, by hand: the deadline (grpc-timeout) and a traceparent.
        const send = () => {
          const metadata = new grpc.Metadata();
          metadata.set('traceparent', traceparent());
          client.unary(REQUEST, metadata, { deadline: Date.now() + 4995 }, (error) =>
            error ? reject(error) : resolve(),
          );
        };
        if (variant === 'headers') send();
        else otel.with(ROOT_CONTEXT.setValue(CALL_KEY, { at: Date.now() }), send);
        return;
      }
      if (!withCtxflow) {
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

/** Runs the closed loop for `seconds`; latencies in ms when `record`. */
async function loop(
  seconds: number,
  record: boolean,
): Promise<{ count: number; errors: number; latencies: number[] }> {
  const end = process.hrtime.bigint() + BigInt(Math.round(seconds * 1e9));
  const latencies: number[] = [];
  let count = 0;
  let errors = 0;
  const worker = async () => {
    while (process.hrtime.bigint() < end) {
      const started = process.hrtime.bigint();
      try {
        await call();
        count++;
        if (record) latencies.push(Number(process.hrtime.bigint() - started) / 1e6);
      } catch {
        errors++;
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return { count, errors, latencies };
}

function quantile(sorted: Float64Array, q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] as number;
}

async function measure(seconds: number, warmup: number, serverPid: number) {
  await loop(warmup, false);
  const cpuBefore = cpuSeconds(serverPid);
  const machineBefore = machineBusySeconds();
  const selfBefore = process.cpuUsage();
  const started = process.hrtime.bigint();
  const { count, errors, latencies } = await loop(seconds, true);
  const elapsed = Number(process.hrtime.bigint() - started) / 1e9;
  const serverCpu = cpuSeconds(serverPid) - cpuBefore;
  const self = process.cpuUsage(selfBefore);
  // What else ran on the machine meanwhile (other processes, the kernel), in cores: a noise gauge.
  const foreign =
    (machineBusySeconds() - machineBefore - serverCpu - (self.user + self.system) / 1e6) / elapsed;
  const sorted = Float64Array.from(latencies).sort();
  return {
    rps: count / elapsed,
    p50: quantile(sorted, 0.5),
    p99: quantile(sorted, 0.99),
    serverCpuUsPerRequest: (serverCpu / count) * 1e6,
    clientCpuUsPerRequest: (self.user + self.system) / count,
    foreignCores: Math.max(0, foreign),
    errors,
  };
}

async function cancellations(trials: number): Promise<Record<string, string>> {
  const issued: Record<string, string> = {};
  for (let i = 0; i < trials; i++) {
    const id = `${variant}-${i}`;
    await new Promise<void>((resolve) => {
      otel.with(ROOT_CONTEXT, () => {
        const ctx = withCtxflow ? withCancel(background()) : undefined;
        const stream =
          ctx === undefined ? client.hang(Buffer.from(id)) : run(ctx, () => client.hang(Buffer.from(id)));
        stream.on('error', () => {});
        stream.once('data', () => {
          issued[id] = String(process.hrtime.bigint());
          if (ctx === undefined) stream.cancel();
          else ctx.cancel();
        });
        stream.on('status', () => setTimeout(resolve, 1));
      });
    });
  }
  return issued;
}

process.on('message', async (message: { type: string; [key: string]: unknown }) => {
  try {
    if (message.type === 'connect') {
      client = new BenchClient(
        `127.0.0.1:${message.port}`,
        grpc.credentials.createInsecure(),
        withCtxflow ? clientOptions() : {},
      ) as Client;
      await new Promise<void>((resolve, reject) =>
        client.waitForReady(Date.now() + 5000, (error) => (error ? reject(error) : resolve())),
      );
      process.send?.({ type: 'connected' });
    } else if (message.type === 'run') {
      const result = await measure(
        message.seconds as number,
        message.warmup as number,
        message.serverPid as number,
      );
      process.send?.({ type: 'result', result });
    } else if (message.type === 'cancel') {
      process.send?.({ type: 'issued', issued: await cancellations(message.trials as number) });
    } else if (message.type === 'spans') {
      const spans = (globalThis as { benchExportedSpans?: () => number }).benchExportedSpans?.() ?? 0;
      process.send?.({ type: 'spans', spans });
    }
  } catch (error) {
    process.send?.({ type: 'error', message: String((error as Error).stack ?? error) });
  }
});
process.on('disconnect', () => process.exit(0));
