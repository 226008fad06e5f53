/**
 * `ctxflow/init`: one call sets up tracing to an OTLP/HTTP collector (Jaeger) and deadlines and
 * cancellation on every supported transport of an unchanged service. Call it before the
 * application loads express, @grpc/grpc-js or kafkajs (first import of the process, or
 * `node --import ctxflow/register`).
 */
import { createRequire } from 'node:module';
import {
  diag,
  type Context as OtelContext,
  ProxyTracerProvider,
  type Span,
  SpanKind,
  type TextMapPropagator,
  type TextMapSetter,
  trace,
} from '@opentelemetry/api';
import { DeadlinePropagator, getContext } from '../sdk/index.ts';
import { ATTR_BUDGET_SENT, DEFAULT_RESERVE_MS, ensureContextManager } from '../sdk/wire.ts';
import {
  type HttpClientOptions,
  type HttpServerOptions,
  patchHttpServers,
  watchHttpClients,
} from './http.ts';
import { installed, onLoad } from './on-load.ts';
import type { StartedTracing } from './tracing.ts';
import type {
  GrpcOptions,
  InstrumentationLike,
  KafkaOptions,
  SamplerLike,
  SpanProcessorLike,
} from './types.ts';
import { watchUndici } from './undici.ts';

export type { HttpClientOptions, HttpServerOptions } from './http.ts';
export type {
  GrpcOptions,
  InstrumentationLike,
  KafkaOptions,
  SamplerLike,
  SpanProcessorLike,
} from './types.ts';

/** Options of `init()`; every field has a default, most from the standard `OTEL_*` variables. */
export interface InitOptions {
  /** The service name on every span. Default `OTEL_SERVICE_NAME`, else OpenTelemetry's `unknown_service`. */
  serviceName?: string;
  /**
   * Base URL of the OTLP/HTTP receiver; spans go to `${endpoint}/v1/traces`. Default
   * `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT`, else http://localhost:4318.
   */
  endpoint?: string;
  /**
   * Start the OpenTelemetry SDK (spans, exporter, instrumentations). False gives deadlines and
   * cancellation alone, with no span SDK loaded. Default true, false when `OTEL_SDK_DISABLED=true`,
   * `OTEL_TRACES_EXPORTER=none` or `CTXFLOW_TRACING=false`.
   */
  tracing?: boolean;
  /** The sampler (one of `@opentelemetry/sdk-trace`'s). Default from `OTEL_TRACES_SAMPLER` (parent-based always-on). */
  sampler?: SamplerLike;
  /**
   * Span processors (`@opentelemetry/sdk-trace`'s) to use instead of the OTLP/HTTP exporter (e.g.
   * for tests or another backend).
   */
  spanProcessors?: SpanProcessorLike[];
  /** More OpenTelemetry instrumentations to register beside http, express, undici, grpc, kafkajs and pg. */
  instrumentations?: InstrumentationLike[];
  /** Inbound node:http/https servers (express, fastify, koa, plain http); false leaves them alone. */
  http?: HttpServerOptions | false;
  /** Outbound node:http/https requests, undici and the global fetch; false leaves them alone. */
  clients?: HttpClientOptions | false;
  /** @grpc/grpc-js clients and servers; false leaves them alone. */
  grpc?: GrpcOptions | false;
  /** kafkajs producers and consumers; false leaves them alone. */
  kafka?: KafkaOptions | false;
  /** node-postgres (`pg`) pools and clients (docs/pg.md); false leaves them alone. */
  pg?: false;
  /**
   * ctxflow's metrics (docs/metrics.md) and the instrumentations': `{ prometheus: {} }` serves a
   * Prometheus scrape endpoint (port 9464 unless given; host `localhost` unless given). Default off,
   * unless `OTEL_METRICS_EXPORTER` names exporters (`prometheus` with `OTEL_EXPORTER_PROMETHEUS_PORT`,
   * `otlp`, `console`). Metrics need tracing on: they come with the SDK.
   */
  metrics?: { prometheus?: { port?: number; host?: string } };
}

/** What `init()` returns. */
export interface Telemetry {
  /** True when the OpenTelemetry SDK was started by this call (false without tracing, or when one ran already). */
  readonly tracing: boolean;
  /**
   * Flushes pending spans (within the exporter's timeout), stops the SDK started here and undoes
   * ctxflow's hooks. Never rejects: an export that fails is reported through OpenTelemetry's diag.
   */
  shutdown(): Promise<void>;
}

/** A ctxflow propagator that also records, on the client span it injects for, the budget it sent. */
class TracedDeadlinePropagator extends DeadlinePropagator {
  override inject(otelContext: OtelContext, carrier: unknown, setter: TextMapSetter): void {
    super.inject(otelContext, carrier, setter);
    const deadline = getContext(otelContext)?.deadline;
    if (deadline === undefined) return;
    // On the span of the call (an SDK span has its kind), not on a server span around it.
    const span = trace.getSpan(otelContext) as (Span & { kind?: SpanKind }) | undefined;
    if (span?.isRecording() && (span.kind === SpanKind.CLIENT || span.kind === SpanKind.PRODUCER)) {
      span.setAttribute(
        ATTR_BUDGET_SENT,
        Math.max(0, Math.floor(deadline - Date.now() - DEFAULT_RESERVE_MS)),
      );
    }
  }
}

/**
 * The propagator `init()` registers with tracing: those `OTEL_PROPAGATORS` names (default W3C trace
 * context, with ctxflow's reader, equivalent to OpenTelemetry's without its regular expressions,
 * and W3C baggage), then ctxflow's deadline headers. Needs `@opentelemetry/core` (a dependency of
 * the span SDK).
 */
export function defaultPropagator(): TextMapPropagator {
  return tracingSetUp().propagatorFromEnv(new TracedDeadlinePropagator());
}

function flag(value: string | undefined): boolean | undefined {
  if (value === undefined || value.trim() === '') return undefined;
  return value.trim().toLowerCase() === 'true';
}

function tracingFromEnv(env: NodeJS.ProcessEnv): boolean {
  if (flag(env.OTEL_SDK_DISABLED) === true) return false;
  if (env.OTEL_TRACES_EXPORTER?.trim().toLowerCase() === 'none') return false;
  return flag(env.CTXFLOW_TRACING) !== false;
}

/** A tracer provider is registered already (a NodeSDK the application started itself). */
function tracerProviderRegistered(): boolean {
  const provider = trace.getTracerProvider();
  const delegate = provider instanceof ProxyTracerProvider ? provider.getDelegate() : provider;
  return delegate.constructor.name !== 'NoopTracerProvider';
}

const require = createRequire(import.meta.url);
// The sources run as .ts (tests, `--conditions=ctxflow-source`), the package as compiled .js.
const EXTENSION = import.meta.url.endsWith('.ts') ? '.ts' : '.js';
/** The SDK set-up, loaded only when tracing is wanted. */
function tracingSetUp(): typeof import('./tracing.ts') {
  return require(`./tracing${EXTENSION}`) as typeof import('./tracing.ts');
}
/** What init()'s gRPC and Kafka hooks are built on (OpenTelemetry's module patching). */
const HOOKS_PACKAGE = '@opentelemetry/instrumentation';

/** Says once, on stderr, what init() could not do for want of packages and how to get them. */
function reportMissing(tracing: string[], hooks: string[]): void {
  const missing = [...new Set([...tracing, ...hooks])];
  if (missing.length === 0) return;
  const lost = [
    ...(tracing.length > 0 ? ['tracing is off'] : []),
    ...(hooks.length > 0 ? ['@grpc/grpc-js, kafkajs and pg get no deadlines'] : []),
  ].join(' and ');
  const quiet =
    tracing.length > 0 ? '; or init({ tracing: false }) / OTEL_SDK_DISABLED=true to run without tracing' : '';
  process.stderr.write(
    `ctxflow/init: ${lost} (packages not installed): npm i ${missing.join(' ')}${quiet}\n`,
  );
}

function milliseconds(value: string | undefined): number | undefined {
  if (value === undefined || value.trim() === '') return undefined;
  const ms = Number(value);
  return Number.isFinite(ms) && ms >= 0 ? ms : undefined;
}

/**
 * `init()` options from environment variables, for `ctxflow/register`: the `OTEL_*` variables are
 * read by `init()` itself; `CTXFLOW_HTTP_BUDGET_MS` and `CTXFLOW_GRPC_BUDGET_MS` set the servers'
 * own budgets, `CTXFLOW_HTTP_TRUST_INBOUND=false` and `CTXFLOW_GRPC_TRUST_INBOUND=false` make a
 * public edge, `CTXFLOW_HTTP=false`, `CTXFLOW_CLIENTS=false`, `CTXFLOW_GRPC=false` and
 * `CTXFLOW_KAFKA=false` and `CTXFLOW_PG=false` opt a transport out; `CTXFLOW_KAFKA_BUDGET_MS`,
 * `CTXFLOW_KAFKA_TRUST_INBOUND` and `CTXFLOW_KAFKA_DEAD_LETTER_TOPIC` (a name in which `{topic}`
 * stands for the message's topic) configure consumers; `CTXFLOW_KAFKA_CANCEL_BUS=false` turns the
 * cancel bus off.
 */
export function optionsFromEnv(env: NodeJS.ProcessEnv): InitOptions {
  const options: InitOptions = {};
  if (flag(env.CTXFLOW_HTTP) === false) options.http = false;
  else
    options.http = {
      budgetMs: milliseconds(env.CTXFLOW_HTTP_BUDGET_MS),
      trustInbound: flag(env.CTXFLOW_HTTP_TRUST_INBOUND),
    };
  if (flag(env.CTXFLOW_CLIENTS) === false) options.clients = false;
  if (flag(env.CTXFLOW_GRPC) === false) options.grpc = false;
  else
    options.grpc = {
      budgetMs: milliseconds(env.CTXFLOW_GRPC_BUDGET_MS),
      trustInbound: flag(env.CTXFLOW_GRPC_TRUST_INBOUND),
    };
  if (flag(env.CTXFLOW_PG) === false) options.pg = false;
  if (flag(env.CTXFLOW_KAFKA) === false) options.kafka = false;
  else {
    const deadLetter = env.CTXFLOW_KAFKA_DEAD_LETTER_TOPIC?.trim();
    options.kafka = {
      budgetMs: milliseconds(env.CTXFLOW_KAFKA_BUDGET_MS),
      trustInbound: flag(env.CTXFLOW_KAFKA_TRUST_INBOUND),
      deadLetterTopic: deadLetter ? (topic) => deadLetter.replaceAll('{topic}', topic) : undefined,
      ...(flag(env.CTXFLOW_KAFKA_CANCEL_BUS) === false && { cancelBus: false }),
    };
  }
  return options;
}

let started: Telemetry | undefined;

/**
 * Starts tracing and ctxflow for the whole process: OpenTelemetry's span SDK (the OTLP/HTTP
 * exporter, NodeSDK only when the environment asks for more; instrumentations for http, express,
 * undici/fetch, grpc, kafkajs and pg; one propagator for W3C trace context, baggage and ctxflow's
 * headers) unless tracing is off or an SDK runs already, and ctxflow's hooks on node:http servers
 * and clients, undici/fetch, grpc-js, kafkajs and pg. Idempotent: later calls return the first
 * call's handle.
 */
export function init(options: InitOptions = {}): Telemetry {
  if (started !== undefined) return started;
  const undo: (() => void)[] = [];
  const wanted = options.tracing ?? tracingFromEnv(process.env);
  const tracingOptions = {
    ...options,
    kafka: options.kafka !== false,
    // pg's instrumentation only for a service that has pg: the others are in every install line.
    pg: options.pg !== false && installed('pg'),
  };
  const missingForTracing = wanted
    ? tracingSetUp()
        .tracingPackages(tracingOptions)
        .filter((name) => !installed(name))
    : [];
  let sdk: StartedTracing | undefined;
  if (wanted && tracerProviderRegistered()) {
    diag.info('ctxflow/init: a tracer provider is registered already; using it');
  } else if (wanted && missingForTracing.length === 0) {
    sdk = tracingSetUp().startTracing(tracingOptions, defaultPropagator());
  }
  // No SDK, no global propagator: ctxflow's hooks write and read traceparent and ctx-timeout
  // themselves (sdk/propagation.ts), which is all deadlines and cancellation need. Baggage and
  // OTEL_PROPAGATORS come with tracing, whose packages bring @opentelemetry/core.
  // An ES module's `import` of node:http does not go through `require`, where instrumentation-http
  // patches it: require them once so that they are patched, whoever imports them and however.
  if (wanted) {
    require('node:http');
    require('node:https');
  }
  // ctxflow's hooks once the SDK (and its context manager) is up. Server listeners run inside
  // instrumentation-http's emit wrapper in any order; undici subscribers run in order of
  // subscription: instrumentation-undici's headers go first and ours only fill the gaps.
  ensureContextManager();
  if (options.http !== false) undo.push(patchHttpServers(options.http ?? {}));
  if (options.clients !== false) {
    undo.push(watchHttpClients(options.clients ?? {}));
    undo.push(watchUndici(options.clients ?? {}));
  }
  // The gRPC and Kafka hooks are built on OpenTelemetry's module patching: set up only when it is
  // installed, and only once the application loads grpc-js or kafkajs, so that init() does not load
  // them, nor the patching, for a service that uses neither.
  const hooks = installed(HOOKS_PACKAGE);
  const wantsHooks =
    (options.grpc !== false && installed('@grpc/grpc-js')) ||
    (options.kafka !== false && installed('kafkajs')) ||
    (options.pg !== false && installed('pg'));
  reportMissing(missingForTracing, wantsHooks && !hooks ? [HOOKS_PACKAGE] : []);
  /** Starts a transport's hook when the application first loads the transport's package. */
  const hookOnLoad = (name: string, start: () => { disable(): void }): void => {
    undo.push(
      onLoad(name, () => {
        const hook = start();
        undo.push(() => hook.disable());
      }),
    );
  };
  if (options.grpc !== false && hooks) {
    const grpcOptions = options.grpc ?? {};
    hookOnLoad('@grpc/grpc-js', () => {
      const { GrpcContextInstrumentation } = require(`./grpc${EXTENSION}`) as typeof import('./grpc.ts');
      // Its constructor loads grpc-js through the require hooks (wrap.ts: loadThroughHooks).
      return new GrpcContextInstrumentation(grpcOptions);
    });
  }
  if (options.kafka !== false && hooks) {
    const kafkaOptions = options.kafka ?? {};
    hookOnLoad('kafkajs', () => {
      // After OpenTelemetry's kafkajs instrumentation: its process span is active when ours runs.
      const { KafkaContextInstrumentation } = require(`./kafka${EXTENSION}`) as typeof import('./kafka.ts');
      return new KafkaContextInstrumentation(kafkaOptions);
    });
  }
  if (options.pg !== false && hooks) {
    hookOnLoad('pg', () => {
      // After OpenTelemetry's pg instrumentation: its wrappers sit under ours.
      const { PgContextInstrumentation } = require(`./pg${EXTENSION}`) as typeof import('./pg.ts');
      return new PgContextInstrumentation();
    });
  }
  let stopping: Promise<void> | undefined;
  const handle: Telemetry = {
    tracing: sdk !== undefined,
    shutdown() {
      stopping ??= (async () => {
        try {
          await sdk?.shutdown();
        } catch (error) {
          // A collector that is down must not fail the application's exit: the spans are lost, said once.
          diag.warn('ctxflow/init: flushing spans at shutdown failed', error);
        } finally {
          for (const fn of undo.reverse()) fn();
          if (started === handle) started = undefined;
        }
      })();
      return stopping;
    },
  };
  started = handle;
  return handle;
}
