// The "kafkajs + OpenTelemetry" variant of bench/kafka.ts, in a process of its own so that the
// other variants run without a tracing SDK: OpenTelemetry's kafkajs instrumentation, a tracer
// provider whose batch processor drops the spans (only the in-process work is measured), W3C
// trace context. Runs what the parent asks over IPC, one run at a time, and answers its figures.
import { createRequire } from 'node:module';
import { context, propagation, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { registerInstrumentations } from '@opentelemetry/instrumentation';
import { KafkaJsInstrumentation } from '@opentelemetry/instrumentation-kafkajs';
import { BatchSpanProcessor, TracerProvider } from '@opentelemetry/sdk-trace';
import type * as KafkaJs from 'kafkajs';
import { DroppingExporter } from './dropping-exporter.ts';
import { consume, produce, type RunSettings } from './kafka-runs.ts';

export type OtelRequest =
  | { op: 'produce'; topic: string; headers: Record<string, string> | undefined }
  | { op: 'consume'; topic: string; workUs: number }
  | { op: 'stop' };

const settings: RunSettings = JSON.parse(process.env.BENCH_RUN_SETTINGS ?? '{}');
const brokers = (process.env.KAFKA_BROKERS ?? '').split(',').filter(Boolean);

context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
propagation.setGlobalPropagator(new W3CTraceContextPropagator());
const provider = new TracerProvider({
  spanProcessors: [new BatchSpanProcessor({ exporter: new DroppingExporter() })],
});
trace.setGlobalTracerProvider(provider);
registerInstrumentations({ instrumentations: [new KafkaJsInstrumentation()] });
// Loaded through require after the instrumentation registered its hook, so that it is patched.
const { Kafka, logLevel } = createRequire(import.meta.url)('kafkajs') as typeof KafkaJs;
if (!('__wrapped' in Kafka.prototype.producer)) throw new Error('kafkajs was not instrumented');

const kafka = new Kafka({ clientId: 'bench-otel', brokers, logLevel: logLevel.NOTHING });
const producer = kafka.producer();
await producer.connect();
const value = 'x'.repeat(100);

process.on('message', async (request: OtelRequest) => {
  if (request.op === 'stop') {
    await producer.disconnect();
    await provider.shutdown();
    process.disconnect();
    return;
  }
  const run =
    request.op === 'produce'
      ? await produce(
          settings,
          (messages) => producer.send({ topic: request.topic, messages }),
          Array.from({ length: settings.batch }, () => ({ value, headers: request.headers })),
        )
      : await consume(settings, kafka, request.topic, request.workUs);
  process.send?.(run);
});
process.send?.('ready');
