/**
 * The types of `init()`'s options that name no optional package: the OpenTelemetry SDK packages,
 * @grpc/grpc-js and kafkajs are optional peer dependencies, and a project that has not installed
 * them must still type-check against `ctxflow/init` (with `skipLibCheck: false` too). The SDK's
 * own sampler, span processors and instrumentations fit the structural types below.
 */
import type { Attributes, Context, Link, SpanKind, TracerProvider } from '@opentelemetry/api';
import type { CancelBusOptions } from '../adapters/kafka/bus-options.ts';
import type { EncodeOptions, InboundOptions } from '../sdk/wire.ts';

/** What `init()` needs of a sampler: `@opentelemetry/sdk-trace`'s samplers are ones. */
export interface SamplerLike {
  shouldSample(
    context: Context,
    traceId: string,
    spanName: string,
    spanKind: SpanKind,
    attributes: Attributes,
    links: Link[],
  ): { decision: number; attributes?: Attributes };
  toString(): string;
}

/** What `init()` needs of a span processor: `@opentelemetry/sdk-trace`'s processors are ones. */
export interface SpanProcessorLike {
  onStart(span: unknown, parentContext: Context): void;
  onEnd(span: unknown): void;
  forceFlush(): Promise<void>;
  shutdown(): Promise<void>;
}

/** What `init()` needs of an instrumentation: every `@opentelemetry/instrumentation-*` one is one. */
export interface InstrumentationLike {
  instrumentationName: string;
  instrumentationVersion: string;
  enable(): void;
  disable(): void;
  setTracerProvider(tracerProvider: TracerProvider): void;
}

/**
 * What `init()` does on @grpc/grpc-js clients and servers: the options of `clientOptions()` and
 * `wrapService()` of `ctxflow/grpc`, and those below.
 */
export interface GrpcOptions extends EncodeOptions, Omit<InboundOptions, 'budgetMs'> {
  /** This service's own budget per call in milliseconds, or a function of the method path giving it. */
  budgetMs?: number | ((path: string) => number | undefined);
  /** Methods (by path, `/package.Service/Method`) ctxflow leaves alone on the server side. */
  ignore?: (path: string) => boolean;
  /**
   * The HTTP/2 stream-reset limit every server gets at its first `addService` (`resetGuard()` of
   * `ctxflow/grpc`), so that the cancellations of ctxflow clients do not trip Node's rapid-reset
   * guard; `false` leaves Node's default (1 000, then 33 per second). Default: `DEFAULT_RESET_GUARD`.
   */
  resetGuard?: Partial<{ streamResetBurst: number; streamResetRate: number }> | false;
  /** A call arriving with less than this many milliseconds left is shed (`wrapService`'s option). Default 5. */
  minBudgetMs?: number;
}

/** What `init()` does on kafkajs producers and consumers. */
export interface KafkaOptions extends Pick<InboundOptions, 'maxInboundMs' | 'skewAllowanceMs'> {
  /**
   * This service's own budget per message in milliseconds. Default 30 000; never more than the
   * consumer's `sessionTimeout` and `rebalanceTimeout`.
   */
  budgetMs?: number;
  /** Honour the deadline headers of consumed messages. Default true. */
  trustInbound?: boolean;
  /**
   * The dead-letter topic for an expired (or cancelled) message of `topic`. Given, a message past
   * its deadline when consumed is sent there (with `ctx-cancel-reason` and the `ctx-dead-letter-*`
   * headers) and its handler does not run. Not given, its handler runs in a context already ended.
   */
  deadLetterTopic?: (topic: string) => string;
  /** Milliseconds kept back from the budget each message carries. Default `DEFAULT_RESERVE_MS`. */
  reserveMs?: number;
  /**
   * The cancel bus (docs/kafka.md), on each Kafka client of the application: its options (topic,
   * horizon), or false for none. Default on, topic `ctxflow.cancel`.
   */
  cancelBus?: CancelBusOptions | false;
}
