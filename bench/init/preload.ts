// Preloaded with `--import` into the init bench's servers. BENCH_LAYER=ctxflow: init() without
// tracing; BENCH_LAYER=init: init() with tracing, spans batched then dropped (as the OTel-only layer).
import { BatchSpanProcessor } from '@opentelemetry/sdk-trace';
import { init } from 'ctxflow/init';
import { DroppingExporter } from '../support/dropping-exporter.ts';

const exporter = new DroppingExporter();
const tracing = process.env.BENCH_LAYER === 'init';
init({
  serviceName: `bench-${process.env.BENCH_ROLE ?? 'server'}`,
  tracing,
  spanProcessors: [new BatchSpanProcessor({ exporter })],
  http: { budgetMs: 10_000 },
});
(globalThis as { benchExportedSpans?: () => number }).benchExportedSpans = () => exporter.spans;
