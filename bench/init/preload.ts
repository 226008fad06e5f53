// Preloaded with `--import` into the init bench's servers. BENCH_LAYER=ctxflow: init() without
// tracing; BENCH_LAYER=init: init() with tracing, spans batched then dropped (as the OTel-only layer);
// BENCH_LAYER=metrics: the same with metrics on a Prometheus endpoint (on a free port, not scraped).
import { BatchSpanProcessor } from '@opentelemetry/sdk-trace';
import { init } from 'ctxflow/init';
import { anyFreePort } from '../../scripts/infra/index.ts';
import { DroppingExporter } from '../support/dropping-exporter.ts';

const exporter = new DroppingExporter();
const metricsOn = process.env.BENCH_LAYER === 'metrics';
const tracing = process.env.BENCH_LAYER === 'init' || metricsOn;

init({
  ...(metricsOn ? { metrics: { prometheus: { port: await anyFreePort(), host: '127.0.0.1' } } } : {}),
  serviceName: `bench-${process.env.BENCH_ROLE ?? 'server'}`,
  tracing,
  spanProcessors: [new BatchSpanProcessor({ exporter })],
  http: { budgetMs: 10_000 },
});
(globalThis as { benchExportedSpans?: () => number }).benchExportedSpans = () => exporter.spans;
