// The bench server, one process per variant (BENCH_VARIANT): grpc-js alone, with OTel (preloaded
// bench/grpc/otel.ts), or with ctxflow (wrapService; `intercepted`: serverInterceptor in front), or
// with each handler in an OpenTelemetry context of its own (`context`). Reports its
// port over IPC; for Hang calls, reports when the handler learnt of the cancellation
// (process.hrtime, CLOCK_MONOTONIC: comparable across processes on one machine).
import * as grpc from '@grpc/grpc-js';
import { createContextKey, context as otel } from '@opentelemetry/api';
import { current } from 'ctxflow';
import { serverInterceptor, wrapService } from 'ctxflow/grpc';
import { ensureContextManager } from 'ctxflow/wire';
import { benchService, type Variant, WITH_CTXFLOW } from './service.ts';

const variant = (process.env.BENCH_VARIANT ?? 'bare') as Variant;
const withCtxflow = WITH_CTXFLOW.includes(variant);

function cancelled(request: Buffer): void {
  const at = process.hrtime.bigint();
  process.send?.({ type: 'cancelled', id: request.toString(), at: String(at) });
}

const implementation = {
  unary(call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) {
    callback(null, call.request);
  },
  hang(call: grpc.ServerWritableStream<Buffer, Buffer>) {
    if (withCtxflow) {
      const signal = current().signal;
      signal.addEventListener('abort', () => cancelled(call.request), { once: true });
    } else {
      call.once('cancelled', () => cancelled(call.request));
    }
    call.write(call.request);
  },
};

const CALL_KEY = createContextKey('bench.call');
if (variant === 'context') ensureContextManager();

/** The implementation with each handler run in an OpenTelemetry context of its own (`context`). */
function inContexts(impl: typeof implementation): typeof implementation {
  const within =
    <A extends unknown[]>(handler: (...args: A) => void) =>
    (...args: A) =>
      otel.with(otel.active().setValue(CALL_KEY, { at: Date.now() }), () => handler(...args));
  return { unary: within(impl.unary), hang: within(impl.hang) };
}

const server = new grpc.Server(variant === 'intercepted' ? { interceptors: [serverInterceptor()] } : {});
server.addService(
  benchService,
  (withCtxflow
    ? wrapService(implementation)
    : variant === 'context'
      ? inContexts(implementation)
      : implementation) as grpc.UntypedServiceImplementation,
);
server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (error, port) => {
  if (error) throw error;
  process.send?.({ type: 'listening', port });
});

process.on('message', (message: { type: string }) => {
  if (message.type === 'spans') {
    const spans = (globalThis as { benchExportedSpans?: () => number }).benchExportedSpans?.() ?? 0;
    process.send?.({ type: 'spans', spans });
  }
});
process.on('disconnect', () => {
  server.forceShutdown();
  process.exit(0);
});
