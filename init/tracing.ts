/**
 * The OpenTelemetry SDK that `init()` starts. Its packages are optional peer dependencies of
 * ctxflow, loaded here with `require` only when tracing is on. By default only what traces need
 * is loaded: the span SDK, the resource detectors, the OTLP/HTTP exporter and the five
 * instrumentations; NodeSDK (which loads every exporter it knows) only when the environment asks
 * for more than traces over OTLP/HTTP: another trace exporter or protocol, metrics, logs.
 */
import { createRequire, register } from 'node:module';
import {
  DiagConsoleLogger,
  DiagLogLevel,
  diag,
  propagation,
  type TextMapPropagator,
  trace,
} from '@opentelemetry/api';
import type { Instrumentation } from '@opentelemetry/instrumentation';
import type { NodeSDKConfiguration } from '@opentelemetry/sdk-node';
import type { Sampler, SpanLimits, SpanProcessor } from '@opentelemetry/sdk-trace';
import { requestHook } from '../adapters/pg/client.ts';
import { TraceContextPropagator } from '../sdk/wire.ts';
import { installed } from './on-load.ts';
import type { InstrumentationLike, SamplerLike, SpanProcessorLike } from './types.ts';

const require = createRequire(import.meta.url);

/**
 * What the SDK set-up takes from `init()`'s options. Their sampler, span processors and
 * instrumentations are typed by their shape (types.ts); they are the SDK's own objects.
 */
export interface TracingOptions {
  serviceName?: string;
  endpoint?: string;
  sampler?: SamplerLike;
  spanProcessors?: SpanProcessorLike[];
  instrumentations?: InstrumentationLike[];
  kafka: boolean;
  pg: boolean;
  metrics?: { prometheus?: { port?: number; host?: string } };
}

/** A started SDK. */
export interface StartedTracing {
  shutdown(): Promise<void>;
}

const INSTRUMENTATIONS = [
  '@opentelemetry/instrumentation',
  '@opentelemetry/instrumentation-http',
  '@opentelemetry/instrumentation-express',
  '@opentelemetry/instrumentation-undici',
  '@opentelemetry/instrumentation-grpc',
];
const KAFKA_INSTRUMENTATION = '@opentelemetry/instrumentation-kafkajs';
const PG_INSTRUMENTATION = '@opentelemetry/instrumentation-pg';
/** W3C baggage and the composite propagator: a dependency of the span SDK, required by ctxflow itself. */
const CORE = '@opentelemetry/core';

function env(name: string): string | undefined {
  const value = process.env[name]?.trim();
  return value === undefined || value === '' ? undefined : value;
}

/**
 * True when the environment or the options ask for what only NodeSDK sets up: a trace exporter
 * other than OTLP/HTTP with JSON, metrics, or logs.
 */
function needsNodeSdk(options: TracingOptions): boolean {
  if (options.metrics?.prometheus !== undefined) return true;
  if (env('OTEL_METRICS_EXPORTER') !== undefined || env('OTEL_LOGS_EXPORTER') !== undefined) return true;
  if (options.spanProcessors !== undefined) return false;
  const exporter = env('OTEL_TRACES_EXPORTER');
  const protocol = env('OTEL_EXPORTER_OTLP_TRACES_PROTOCOL') ?? env('OTEL_EXPORTER_OTLP_PROTOCOL');
  return !(
    (exporter === undefined || exporter === 'otlp') &&
    (protocol === undefined || protocol === 'http/json')
  );
}

/** The packages tracing needs with these options and this environment. */
export function tracingPackages(options: TracingOptions): string[] {
  const packages = [
    ...INSTRUMENTATIONS,
    ...(options.kafka ? [KAFKA_INSTRUMENTATION] : []),
    ...(options.pg ? [PG_INSTRUMENTATION] : []),
    CORE,
  ];
  if (needsNodeSdk(options)) {
    packages.push('@opentelemetry/sdk-node', '@opentelemetry/exporter-trace-otlp-http');
    if (options.metrics?.prometheus !== undefined) packages.push('@opentelemetry/exporter-prometheus');
  } else {
    packages.push('@opentelemetry/sdk-trace', '@opentelemetry/resources');
    if (options.spanProcessors === undefined) packages.push('@opentelemetry/exporter-trace-otlp-http');
  }
  for (const name of propagatorNames()) {
    const from = EXTRA_PROPAGATORS[name]?.from;
    if (from !== undefined && !packages.includes(from)) packages.push(from);
  }
  return packages;
}

/** Propagators `OTEL_PROPAGATORS` may name beyond W3C trace context and baggage, and where they live. */
const EXTRA_PROPAGATORS: Record<string, { from: string; make: (module: never) => TextMapPropagator }> = {
  b3: {
    from: '@opentelemetry/propagator-b3',
    make: (b3: {
      B3Propagator: new (config: object) => TextMapPropagator;
      B3InjectEncoding: { SINGLE_HEADER: number };
    }) => new b3.B3Propagator({ injectEncoding: b3.B3InjectEncoding.SINGLE_HEADER }),
  },
  b3multi: {
    from: '@opentelemetry/propagator-b3',
    make: (b3: {
      B3Propagator: new (config: object) => TextMapPropagator;
      B3InjectEncoding: { MULTI_HEADER: number };
    }) => new b3.B3Propagator({ injectEncoding: b3.B3InjectEncoding.MULTI_HEADER }),
  },
};

function propagatorNames(): string[] {
  const names = env('OTEL_PROPAGATORS')
    ?.split(',')
    .map((name) => name.trim())
    .filter((name) => name !== '');
  return names === undefined ? ['tracecontext', 'baggage'] : [...new Set(names)];
}

/**
 * The propagators `OTEL_PROPAGATORS` names (default W3C trace context and baggage), then `last`
 * (ctxflow's deadline headers, always), composed by `@opentelemetry/core` (which the span SDK
 * loads anyway). B3 (`b3`, `b3multi`) is loaded only when named.
 */
export function propagatorFromEnv(last: TextMapPropagator): TextMapPropagator {
  const { CompositePropagator, W3CBaggagePropagator } = require(CORE) as typeof import('@opentelemetry/core');
  const propagators: TextMapPropagator[] = [];
  for (const name of propagatorNames()) {
    if (name === 'tracecontext') propagators.push(new TraceContextPropagator());
    else if (name === 'baggage') propagators.push(new W3CBaggagePropagator());
    else if (name === 'none') continue;
    else {
      const extra = EXTRA_PROPAGATORS[name];
      if (extra === undefined)
        diag.warn(`ctxflow/init: OTEL_PROPAGATORS names "${name}", which is not supported`);
      else if (installed(extra.from)) propagators.push(extra.make(require(extra.from) as never));
    }
  }
  return new CompositePropagator({ propagators: [...propagators, last] });
}

let loaderHookRegistered = false;

/**
 * Registers OpenTelemetry's loader hook (import-in-the-middle), once, so that ES modules imported
 * from now on (`import()` after init(), or the whole application after `--import ctxflow/register`)
 * are instrumented; CommonJS modules are patched on require without it.
 */
function registerLoaderHook(): void {
  if (loaderHookRegistered) return;
  loaderHookRegistered = true;
  register('@opentelemetry/instrumentation/hook.mjs', import.meta.url);
}

function instrumentations(options: TracingOptions): Instrumentation[] {
  const { HttpInstrumentation } =
    require('@opentelemetry/instrumentation-http') as typeof import('@opentelemetry/instrumentation-http');
  const { ExpressInstrumentation } =
    require('@opentelemetry/instrumentation-express') as typeof import('@opentelemetry/instrumentation-express');
  const { UndiciInstrumentation } =
    require('@opentelemetry/instrumentation-undici') as typeof import('@opentelemetry/instrumentation-undici');
  const { GrpcInstrumentation } =
    require('@opentelemetry/instrumentation-grpc') as typeof import('@opentelemetry/instrumentation-grpc');
  // Destructured, not `new (require(...) as ...).Class()`: tsc drops those parentheses with the
  // assertion, and the compiled `new require(...).Class()` calls the class without `new`.
  const { KafkaJsInstrumentation } = (options.kafka ? require(KAFKA_INSTRUMENTATION) : {}) as Partial<
    typeof import('@opentelemetry/instrumentation-kafkajs')
  >;
  const kafka = KafkaJsInstrumentation === undefined ? [] : [new KafkaJsInstrumentation()];
  // Its query spans reach ctxflow through the hook, which records the budget sent and the cause.
  const { PgInstrumentation } = (options.pg ? require(PG_INSTRUMENTATION) : {}) as Partial<
    typeof import('@opentelemetry/instrumentation-pg')
  >;
  const pg = PgInstrumentation === undefined ? [] : [new PgInstrumentation({ requestHook })];
  return [
    new HttpInstrumentation(),
    new ExpressInstrumentation(),
    new UndiciInstrumentation(),
    new GrpcInstrumentation(),
    ...kafka,
    ...pg,
    ...((options.instrumentations ?? []) as Instrumentation[]),
  ];
}

function otlpHttpExporter(endpoint: string | undefined) {
  const { OTLPTraceExporter } =
    require('@opentelemetry/exporter-trace-otlp-http') as typeof import('@opentelemetry/exporter-trace-otlp-http');
  const base = endpoint?.replace(/\/+$/, '');
  return new OTLPTraceExporter(base === undefined ? {} : { url: `${base}/v1/traces` });
}

/** Starts the SDK; every package `tracingPackages(options)` lists must be installed. */
export function startTracing(options: TracingOptions, propagator: TextMapPropagator): StartedTracing {
  registerLoaderHook();
  return needsNodeSdk(options) ? startNodeSdk(options, propagator) : startLight(options, propagator);
}

/** NodeSDK, for what the environment asks beyond traces over OTLP/HTTP. */
function startNodeSdk(options: TracingOptions, propagator: TextMapPropagator): StartedTracing {
  const { NodeSDK } = require('@opentelemetry/sdk-node') as typeof import('@opentelemetry/sdk-node');
  const config: Partial<NodeSDKConfiguration> = {
    textMapPropagator: propagator,
    instrumentations: instrumentations(options),
  };
  if (options.serviceName !== undefined) config.serviceName = options.serviceName;
  if (options.sampler !== undefined) config.sampler = options.sampler as Sampler;
  const prometheus = options.metrics?.prometheus;
  if (prometheus !== undefined) {
    const { PrometheusExporter } =
      require('@opentelemetry/exporter-prometheus') as typeof import('@opentelemetry/exporter-prometheus');
    config.metricReaders = [new PrometheusExporter({ port: prometheus.port, host: prometheus.host })];
  } else if (env('OTEL_METRICS_EXPORTER') === undefined) {
    config.metricReaders = [];
  }
  if (env('OTEL_LOGS_EXPORTER') === undefined) config.logRecordProcessors = [];
  if (options.spanProcessors !== undefined) {
    config.spanProcessors = options.spanProcessors as SpanProcessor[];
  } else {
    const exporter = env('OTEL_TRACES_EXPORTER');
    const protocol = env('OTEL_EXPORTER_OTLP_TRACES_PROTOCOL') ?? env('OTEL_EXPORTER_OTLP_PROTOCOL');
    // OTLP/HTTP with JSON unless the environment names another exporter or protocol: then NodeSDK picks.
    if (
      (exporter === undefined || exporter === 'otlp') &&
      (protocol === undefined || protocol === 'http/json')
    ) {
      config.traceExporter = otlpHttpExporter(options.endpoint);
    }
  }
  const sdk = new NodeSDK(config);
  sdk.start();
  return sdk;
}

function number(name: string): number | undefined {
  const value = env(name);
  if (value === undefined) return undefined;
  const parsed = Number(value);
  return Number.isFinite(parsed) ? parsed : undefined;
}

/** The sampler `OTEL_TRACES_SAMPLER` names, as NodeSDK reads it; undefined for the default (parent-based always-on). */
function samplerFromEnv(): Sampler | undefined {
  const name = env('OTEL_TRACES_SAMPLER');
  if (name === undefined) return undefined;
  const sdkTrace = require('@opentelemetry/sdk-trace') as typeof import('@opentelemetry/sdk-trace');
  const ratio = () => {
    const value = number('OTEL_TRACES_SAMPLER_ARG');
    return value !== undefined && value >= 0 && value <= 1 ? value : 1;
  };
  const parentBased = (root: Sampler) => new sdkTrace.ParentBasedSampler({ root });
  switch (name) {
    case 'always_on':
      return new sdkTrace.AlwaysOnSampler();
    case 'always_off':
      return new sdkTrace.AlwaysOffSampler();
    case 'parentbased_always_on':
      return parentBased(new sdkTrace.AlwaysOnSampler());
    case 'parentbased_always_off':
      return parentBased(new sdkTrace.AlwaysOffSampler());
    case 'traceidratio':
      return new sdkTrace.TraceIdRatioBasedSampler(ratio());
    case 'parentbased_traceidratio':
      return parentBased(new sdkTrace.TraceIdRatioBasedSampler(ratio()));
    default:
      diag.error(`ctxflow/init: unknown OTEL_TRACES_SAMPLER value "${name}", using the default`);
      return undefined;
  }
}

/** The span limits of the `OTEL_*_LIMIT` variables, as NodeSDK reads them. */
function spanLimitsFromEnv(): SpanLimits {
  return {
    attributeCountLimit: number('OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT') ?? number('OTEL_ATTRIBUTE_COUNT_LIMIT'),
    attributeValueLengthLimit:
      number('OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT') ?? number('OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT'),
    eventCountLimit: number('OTEL_SPAN_EVENT_COUNT_LIMIT'),
    linkCountLimit: number('OTEL_SPAN_LINK_COUNT_LIMIT'),
    attributePerEventCountLimit:
      number('OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT') ?? number('OTEL_SPAN_ATTRIBUTE_PER_EVENT_COUNT_LIMIT'),
    attributePerLinkCountLimit:
      number('OTEL_LINK_ATTRIBUTE_COUNT_LIMIT') ?? number('OTEL_SPAN_ATTRIBUTE_PER_LINK_COUNT_LIMIT'),
  };
}

const LOG_LEVELS: Record<string, DiagLogLevel> = {
  NONE: DiagLogLevel.NONE,
  ERROR: DiagLogLevel.ERROR,
  WARN: DiagLogLevel.WARN,
  INFO: DiagLogLevel.INFO,
  DEBUG: DiagLogLevel.DEBUG,
  VERBOSE: DiagLogLevel.VERBOSE,
  ALL: DiagLogLevel.ALL,
};

/**
 * Traces only, without NodeSDK: what NodeSDK would set up for traces over OTLP/HTTP (its default
 * resource detectors with `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER`,
 * `OTEL_BSP_*`, span limits, `OTEL_LOG_LEVEL`), without loading the other exporters, metrics and
 * logs (NodeSDK, which loads them all, takes about 200 ms more to start).
 */
function startLight(options: TracingOptions, propagator: TextMapPropagator): StartedTracing {
  const sdkTrace = require('@opentelemetry/sdk-trace') as typeof import('@opentelemetry/sdk-trace');
  const resources = require('@opentelemetry/resources') as typeof import('@opentelemetry/resources');
  const { registerInstrumentations } =
    require('@opentelemetry/instrumentation') as typeof import('@opentelemetry/instrumentation');
  const logLevel = LOG_LEVELS[env('OTEL_LOG_LEVEL')?.toUpperCase() ?? ''];
  if (logLevel !== undefined) diag.setLogger(new DiagConsoleLogger(), { logLevel });
  // NodeSDK's default detectors (`service`, `host`, `process`), then OTEL_RESOURCE_ATTRIBUTES over
  // them and OTEL_SERVICE_NAME over that: detectResources merges each over the ones before.
  let resource = resources.defaultResource().merge(
    resources.detectResources({
      detectors: [
        resources.serviceInstanceIdDetector,
        resources.hostDetector,
        resources.osDetector,
        resources.processDetector,
        resources.resourceAttributesEnvDetector,
        resources.serviceNameEnvDetector,
      ],
    }),
  );
  if (options.serviceName !== undefined) {
    resource = resource.merge(resources.resourceFromAttributes({ 'service.name': options.serviceName }));
  }
  const nonNegative = (name: string) => {
    const value = number(name);
    return value !== undefined && value >= 0 ? value : undefined;
  };
  const spanProcessors = (options.spanProcessors as SpanProcessor[] | undefined) ?? [
    new sdkTrace.BatchSpanProcessor({
      exporter: otlpHttpExporter(options.endpoint),
      maxQueueSize: nonNegative('OTEL_BSP_MAX_QUEUE_SIZE'),
      scheduledDelayMillis: nonNegative('OTEL_BSP_SCHEDULE_DELAY'),
      exportTimeoutMillis: nonNegative('OTEL_BSP_EXPORT_TIMEOUT'),
      maxExportBatchSize: nonNegative('OTEL_BSP_MAX_EXPORT_BATCH_SIZE'),
    }),
  ];
  const sampler = (options.sampler as Sampler | undefined) ?? samplerFromEnv();
  const provider = new sdkTrace.TracerProvider({
    resource,
    spanProcessors,
    spanLimits: spanLimitsFromEnv(),
    ...(sampler === undefined ? {} : { sampler }),
  });
  trace.setGlobalTracerProvider(provider);
  propagation.setGlobalPropagator(propagator);
  // The provider itself, not the API's proxy: the SDK packages are loaded as CommonJS, and the
  // CommonJS copy of the API has a proxy of its own, whose delegate is never set from here.
  const disable = registerInstrumentations({
    instrumentations: instrumentations(options),
    tracerProvider: provider,
  });
  return {
    async shutdown() {
      await provider.shutdown();
      disable();
    },
  };
}
