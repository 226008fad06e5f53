// Preloaded with `--import` into the gRPC bench's processes (variants otel and ctxflow): registers
// the instrumentation loader hook, then starts the OpenTelemetry SDK with instrumentation-grpc
// before @grpc/grpc-js is loaded. Spans are made and batched but dropped at export, so the cost
// measured is OTel's in-process work only.
import { register } from 'node:module';
import { GrpcInstrumentation } from '@opentelemetry/instrumentation-grpc';
import { NodeSDK } from '@opentelemetry/sdk-node';
import { BatchSpanProcessor } from '@opentelemetry/sdk-trace';
import { DroppingExporter } from '../support/dropping-exporter.ts';

register('@opentelemetry/instrumentation/hook.mjs', import.meta.url);

const exporter = new DroppingExporter();
const sdk = new NodeSDK({
  serviceName: `bench-grpc-${process.env.BENCH_ROLE ?? 'server'}`,
  spanProcessors: [new BatchSpanProcessor({ exporter })],
  // Traces only, as init() sets up by default: NodeSDK would otherwise add an OTLP metrics reader.
  metricReaders: [],
  instrumentations: [new GrpcInstrumentation()],
});
sdk.start();

(globalThis as { benchExportedSpans?: () => number }).benchExportedSpans = () => exporter.spans;
