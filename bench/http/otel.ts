// Preloaded with `--import` into the bench's server processes (variants b and c): registers the
// instrumentation loader hook, then starts the OpenTelemetry SDK before express is loaded. Spans are
// made and batched but dropped at export, so the cost measured is OTel's in-process work only.
import { register } from 'node:module';
import { CompositePropagator, W3CBaggagePropagator, W3CTraceContextPropagator } from '@opentelemetry/core';
import { ExpressInstrumentation } from '@opentelemetry/instrumentation-express';
import { HttpInstrumentation } from '@opentelemetry/instrumentation-http';
import { UndiciInstrumentation } from '@opentelemetry/instrumentation-undici';
import { NodeSDK } from '@opentelemetry/sdk-node';
import { BatchSpanProcessor } from '@opentelemetry/sdk-trace';
import { DeadlinePropagator } from 'ctxflow';
import { DroppingExporter } from '../support/dropping-exporter.ts';

register('@opentelemetry/instrumentation/hook.mjs', import.meta.url);

const exporter = new DroppingExporter();
const withCtxflow = process.env.BENCH_CTXFLOW === '1';
const sdk = new NodeSDK({
  serviceName: `bench-${process.env.BENCH_ROLE ?? 'server'}`,
  spanProcessors: [new BatchSpanProcessor({ exporter })],
  // Traces only, as init() sets up by default: NodeSDK would otherwise add an OTLP metrics reader.
  metricReaders: [],
  instrumentations: [
    new HttpInstrumentation(),
    // As the README advises: no span for ctxflow's middleware, which would cost more than it does.
    new ExpressInstrumentation(withCtxflow ? { ignoreLayers: ['middleware - ctxflowDeadlines'] } : {}),
    new UndiciInstrumentation(),
  ],
  ...(withCtxflow
    ? {
        textMapPropagator: new CompositePropagator({
          propagators: [
            new W3CTraceContextPropagator(),
            new W3CBaggagePropagator(),
            new DeadlinePropagator(),
          ],
        }),
      }
    : {}),
});
sdk.start();

/** How many spans were exported (and dropped) so far: the bench checks the instrumentation is live. */
export function exportedSpans(): number {
  return exporter.spans;
}
(globalThis as { benchExportedSpans?: () => number }).benchExportedSpans = exportedSpans;
