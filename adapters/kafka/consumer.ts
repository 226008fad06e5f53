import { setTimeout as sleep } from 'node:timers/promises';
import {
  type Context as OtelContext,
  context as otel,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  trace,
} from '@opentelemetry/api';
import type { Batch, Consumer, ConsumerRunConfig, IHeaders, KafkaMessage, Producer } from 'kafkajs';
import {
  background,
  type CancelableContext,
  type Cause,
  type Context,
  setContext,
  withDeadline,
} from '../../sdk/index.ts';
import type { Shutdown } from '../../sdk/resilience/index.ts';
import {
  ATTR_BUDGET_ARRIVAL,
  acceptInbound,
  CANCEL_REASON_HEADER,
  countEnded,
  countKafkaMessage,
  countShed,
  decodeRequestId,
  encodeCause,
  errorFor,
  hopAttributes,
  type InboundOptions,
  REQUEST_ID_HEADER,
  recordArrival,
  recordCancelDelay,
  traceEnd,
  traceInbound,
} from '../../sdk/wire.ts';
import type { CancelBus } from './bus.ts';
import { headersGetter, KAFKA, manage } from './headers.ts';

/** Span attribute: what became of a message (`handled`, `dead-lettered`, `skipped`). */
export const ATTR_OUTCOME = 'ctxflow.kafka.outcome';

/** Where a message that expired (or was cancelled) before it was handled goes. */
export type ExpiryPolicy = 'dead-letter' | 'skip' | 'process';

/** When a dead-lettered message expired or failed, and where. */
export const DEAD_LETTER_AT_HEADER = 'ctx-dead-letter-at';
/** Where a message was dead-lettered: `group topic/partition@offset`. */
export const DEAD_LETTER_FROM_HEADER = 'ctx-dead-letter-from';
/** How many times the handler ran before the message was dead-lettered. */
export const DEAD_LETTER_ATTEMPTS_HEADER = 'ctx-dead-letter-attempts';

/**
 * A dead letter's headers: the message's own, its cause (`ctx-cancel-reason`), when, where from
 * (`group topic/partition@offset`) and after how many runs of the handler.
 */
export function deadLetterHeaders(
  message: KafkaMessage,
  cause: Cause,
  from: string,
  attempts: number,
): IHeaders {
  return {
    ...message.headers,
    [CANCEL_REASON_HEADER]: encodeCause(cause),
    [DEAD_LETTER_AT_HEADER]: String(Date.now()),
    [DEAD_LETTER_FROM_HEADER]: from,
    [DEAD_LETTER_ATTEMPTS_HEADER]: String(attempts),
  };
}

/** How the consumer builds each message's context and what it does with the ones it cannot handle. */
export interface ConsumerOptions
  extends Pick<
    InboundOptions,
    'maxInboundMs' | 'skewAllowanceMs' | 'ignoreInboundDeadline' | 'trustInbound'
  > {
  /** This service's processing budget per message in ms. Default 30 000; cut to the session and rebalance timeouts. */
  budgetMs?: number;
  /** The consumer's `sessionTimeout` (kafkajs default 30 000): budgets never exceed it. */
  sessionTimeout?: number;
  /** The consumer's `rebalanceTimeout` (kafkajs default 60 000): budgets never exceed it. */
  rebalanceTimeout?: number;
  /** A message past its deadline when taken from the queue: dead-letter (default), skip, or process anyway. */
  onExpired?: ExpiryPolicy;
  /** Runs of the handler after a failure before the message is dead-lettered. Default 2. */
  retries?: number;
  /** Pause before a retry, in ms. Default 100. */
  retryBackoffMs?: number;
  /** Sends dead letters (required: a handler that keeps failing is dead-lettered). A plain kafkajs producer. */
  deadLetterProducer?: Producer;
  /** The dead-letter topic for a message of `topic`. Default `${topic}.dead-letter`. */
  deadLetterTopic?: (topic: string) => string;
  /** Cancel events: handlers of a cancelled request are cancelled, its queued messages skipped. */
  cancelBus?: CancelBus;
  /** How often a running handler's heartbeat is sent (and a rebalance noticed), in ms. Default 1000. */
  heartbeatIntervalMs?: number;
  /**
   * A graceful shutdown to take part in: each handler is admitted through it; once it begins the
   * consumer starts no new message, handlers still running when the grace ends are cancelled with
   * cause `shutdown` and their messages left for redelivery, and its drain waits for what finished
   * to be committed, then disconnects.
   */
  shutdown?: Shutdown;
}

/** What a handler gets for each message: kafkajs's payload plus the message's context. */
export interface MessagePayload {
  topic: string;
  partition: number;
  message: KafkaMessage;
  /** The message's context: its deadline, its cancellation; also `current()` inside the handler. */
  ctx: CancelableContext;
  /** The message's `ctx-request-id`, when valid. */
  requestId: string | undefined;
  /** True when the message had expired and runs only because `onExpired` is `process`. */
  expired: boolean;
  /** kafkajs's heartbeat, for handlers that loop. */
  heartbeat(): Promise<void>;
  /** The whole batch, in `eachBatch` mode. */
  batch?: Batch;
}

/** A handler of one message. */
export type MessageHandler = (payload: MessagePayload) => Promise<void>;

/** What `run` takes: kafkajs's run options, with per-message handlers for either mode. */
export interface ContextRunConfig
  extends Omit<ConsumerRunConfig, 'eachMessage' | 'eachBatch' | 'eachBatchAutoResolve'> {
  /** Runs each message as kafkajs's eachMessage does, in the message's context. */
  eachMessage?: MessageHandler;
  /** Fetches in batches (kafkajs's eachBatch) and runs each message of a batch in its own context. */
  eachBatch?: MessageHandler;
}

/** A kafkajs consumer whose `run` takes per-message handlers that run in each message's context. */
export interface ContextConsumer extends Omit<Consumer, 'run'> {
  run(config: ContextRunConfig): Promise<void>;
  /** Handlers running now. */
  readonly running: number;
}

/** Thrown to kafkajs to keep a message's offset uncommitted: its handler was stopped by a rebalance or a stop. */
class Redeliver extends Error {
  override readonly name = 'Redeliver';
}

interface Running {
  readonly ctx: CancelableContext;
  readonly requestId: string | undefined;
  readonly heartbeat: () => Promise<void>;
  readonly since: number;
  redeliver: boolean;
}

type Outcome = 'handled' | 'skipped' | 'dead-lettered';

/** One message to handle, as kafkajs delivered it. */
interface Delivery {
  readonly handler: MessageHandler;
  readonly topic: string;
  readonly partition: number;
  readonly message: KafkaMessage;
  readonly heartbeat: () => Promise<void>;
  /** The batch it came in, under eachBatch. */
  readonly batch: Batch | undefined;
}

const REBALANCE_ERRORS = new Set(['REBALANCE_IN_PROGRESS', 'ILLEGAL_GENERATION', 'UNKNOWN_MEMBER_ID']);
// A proxy: it takes up the real tracer whenever a tracing SDK registers one.
const tracer = trace.getTracer('ctxflow/kafka');

/**
 * Wraps a kafkajs consumer: each message's handler runs in a context rebuilt from its headers,
 * with a deadline that is the earliest of the message's (`prefer: 'deadline'`, bounded against
 * clock skew) and the per-message budget. Expired or cancelled messages follow `onExpired`;
 * failed handlers are retried, then dead-lettered. Offsets are committed only once a message is
 * handled, skipped by policy or dead-lettered; handlers stopped by a stop or a rebalance leave
 * theirs uncommitted, so the message is handled again by the partition's next owner.
 */
export function consumer(inner: Consumer, options: ConsumerOptions = {}): ContextConsumer {
  manage(inner);
  // A handler that keeps failing ends in the dead-letter topic whatever `onExpired` says: without
  // a producer for it the consumer could only stall on that message.
  const dlq: Producer | undefined = options.deadLetterProducer;
  if (dlq === undefined) throw new TypeError('ctxflow/kafka: consumer() needs deadLetterProducer');
  const deadLetters: Producer = dlq;
  const budgetMs = Math.min(
    options.budgetMs ?? 30_000,
    options.sessionTimeout ?? 30_000,
    options.rebalanceTimeout ?? 60_000,
  );
  const inbound: InboundOptions = {
    prefer: 'deadline',
    budgetMs,
    maxInboundMs: options.maxInboundMs,
    skewAllowanceMs: options.skewAllowanceMs,
    ignoreInboundDeadline: options.ignoreInboundDeadline,
    trustInbound: options.trustInbound,
  };
  const onExpired = options.onExpired ?? 'dead-letter';
  const retries = options.retries ?? 2;
  const backoffMs = options.retryBackoffMs ?? 100;
  const heartbeatMs = options.heartbeatIntervalMs ?? 1000;
  const deadLetterTopic = options.deadLetterTopic ?? ((topic: string) => `${topic}.dead-letter`);
  const bus = options.cancelBus;
  const running = new Set<Running>();
  let groupId = '';
  inner.on(inner.events.GROUP_JOIN, (event) => {
    groupId = event.payload.groupId;
  });
  // kafkajs revokes every partition on a rebalance (eager protocol): every running handler's
  // message may now belong to another instance.
  inner.on(inner.events.REBALANCING, () => stopAll({ code: 'rebalance' }));

  function stopAll(cause: Cause): void {
    for (const entry of running) stopOne(entry, cause);
  }

  function stopOne(entry: Running, cause: Cause): void {
    entry.redeliver = true;
    entry.ctx.cancel(cause);
  }

  // On shutdown kafkajs's own stop starts no further message and lets the running ones finish,
  // committing each batch's handled offsets before it leaves the group; the drain awaits it.
  const coordinator = options.shutdown;
  let stopping: Promise<void> | undefined;
  coordinator?.onStop(() => {
    stopping = inner.stop();
    return stopping;
  });
  coordinator?.onDrain(async () => {
    try {
      await stopping;
    } finally {
      await disconnect();
    }
  });

  // One timer for the whole consumer, not one per message: it heartbeats for the handlers that
  // have run longer than the interval (kafkajs only heartbeats between messages), which also
  // notices a rebalance.
  let beat: NodeJS.Timeout | undefined;
  const heartbeatLongRunning = () => {
    const due = performance.now() - heartbeatMs;
    for (const entry of running) {
      if (entry.since > due) continue;
      entry.heartbeat().catch((error: { type?: string }) => {
        if (REBALANCE_ERRORS.has(error?.type ?? '')) stopAll({ code: 'rebalance' });
      });
    }
  };

  const unsubscribe = bus?.onCancel((requestId, cause, publishedAt) => {
    for (const entry of running) {
      if (entry.requestId !== requestId) continue;
      entry.ctx.cancel(cause);
      // From the cancel's publication to the running handler's abort, on this instance.
      recordCancelDelay(bus.topic, 'abort', Date.now() - publishedAt);
    }
  });

  async function deadLetter(
    topic: string,
    partition: number,
    message: KafkaMessage,
    cause: Cause,
    attempts: number,
  ): Promise<void> {
    const headers = deadLetterHeaders(
      message,
      cause,
      `${groupId} ${topic}/${partition}@${message.offset}`,
      attempts,
    );
    // The message's own context is over: the dead letter is sent from the root context.
    await otel.with(ROOT_CONTEXT, () =>
      background().run(() =>
        deadLetters.send({
          topic: deadLetterTopic(topic),
          messages: [{ key: message.key, value: message.value, headers, timestamp: message.timestamp }],
        }),
      ),
    );
  }

  async function unhandled(
    topic: string,
    partition: number,
    message: KafkaMessage,
    cause: Cause,
  ): Promise<Outcome> {
    if (onExpired === 'skip' || (onExpired === 'process' && cause.code !== 'deadline_exceeded')) {
      countKafkaMessage(topic, 'skipped', cause.code);
      return 'skipped';
    }
    await deadLetter(topic, partition, message, cause, 0);
    countKafkaMessage(topic, 'dead-lettered', cause.code);
    return 'dead-lettered';
  }

  async function handle(delivery: Delivery): Promise<Outcome> {
    if (coordinator === undefined) return handleAdmitted(delivery);
    // A message not started before the shutdown began is left to the partition's next owner.
    const admitted = coordinator.admit(background());
    if (admitted === undefined) throw new Redeliver('shutting down');
    try {
      return await handleAdmitted(delivery, admitted.ctx);
    } finally {
      admitted.end();
    }
  }

  /** Handles one message; `admission`'s end (the shutdown's grace running out) stops its handler for redelivery. */
  async function handleAdmitted(delivery: Delivery, admission?: Context): Promise<Outcome> {
    const { handler, topic, partition, message, heartbeat, batch } = delivery;
    const headers = message.headers ?? {};
    const requestId = decodeRequestId(headersGetter.get(headers, REQUEST_ID_HEADER));
    // In eachBatch the active context is kafkajs instrumentation's receive span, not the message's.
    const base = batch === undefined ? otel.active() : ROOT_CONTEXT;
    const call =
      batch === undefined
        ? acceptInbound(headers, headersGetter, inbound)
        : otel.with(base, () => acceptInbound(headers, headersGetter, inbound));
    let ctx = call.ctx;
    let otelContext = call.otelContext;
    let expired = false;
    const attributes = hopAttributes(KAFKA, topic);
    recordArrival(attributes, call.budgetMs);
    // kafkajs instrumentation already runs eachMessage under a process span of its own: ours go
    // on it, and it ends it.
    const instrumented = batch === undefined && trace.getSpan(base) !== undefined;
    const span = instrumented ? trace.getSpan(base) : startSpan(topic, partition, message, otelContext);
    if (span !== undefined) otelContext = trace.setSpan(otelContext, span);
    // A message never handled (cancelled or expired in the queue) still shows in the trace, with its cause.
    const notHandled = async (cause: Cause): Promise<Outcome> => {
      if (span !== undefined) traceEnd(span, errorFor(cause));
      const outcome = await unhandled(topic, partition, message, cause);
      span?.setAttribute(ATTR_OUTCOME, outcome);
      if (!instrumented) span?.end();
      return outcome;
    };
    const cancelled = requestId === undefined ? undefined : bus?.cancelled(requestId);
    if (cancelled !== undefined) {
      ctx.cancel();
      countShed(attributes);
      return notHandled(cancelled);
    }
    if (ctx.done) {
      const cause = ctx.cause ?? { code: 'deadline_exceeded' };
      countShed(attributes);
      span?.setAttribute(ATTR_BUDGET_ARRIVAL, 0);
      if (onExpired !== 'process') return notHandled(cause);
      expired = true;
      ctx = withDeadline(background(), Date.now() + budgetMs);
      otelContext = setContext(otelContext, ctx);
    }
    const untrace = traceInbound(span, ctx, call.budgetMs);
    const entry: Running = { ctx, requestId, heartbeat, since: performance.now(), redeliver: false };
    running.add(entry);
    const unadmit = admission?.onDone((error) => stopOne(entry, error.cause));
    let attempts = 0;
    try {
      for (;;) {
        attempts++;
        try {
          await otel.with(otelContext, () =>
            handler({ topic, partition, message, ctx, requestId, expired, heartbeat, batch }),
          );
          span?.setStatus({ code: SpanStatusCode.OK });
          span?.setAttribute(ATTR_OUTCOME, 'handled');
          return 'handled';
        } catch {
          if (entry.redeliver) throw new Redeliver(`handler stopped: ${ctx.cause?.code}`);
          const cause = ctx.cause;
          if (cause !== undefined || attempts > retries) {
            span?.setStatus({ code: SpanStatusCode.ERROR, message: cause?.code ?? 'error' });
            const reason = cause ?? { code: 'error' };
            await deadLetter(topic, partition, message, reason, attempts);
            countKafkaMessage(topic, 'dead-lettered', reason.code);
            span?.setAttribute(ATTR_OUTCOME, 'dead-lettered');
            return 'dead-lettered';
          }
          await sleep(backoffMs, undefined, { signal: ctx.signal }).catch(() => {});
          if (entry.redeliver) throw new Redeliver(`handler stopped: ${ctx.cause?.code}`);
        }
      }
    } finally {
      unadmit?.();
      running.delete(entry);
      const cause = ctx.cause;
      if (cause !== undefined) countEnded(attributes, cause.code);
      // The release after the message's work is no cancellation: the span is no longer watching.
      untrace();
      ctx.cancel();
      if (!instrumented) span?.end();
    }
  }

  const run = async (config: ContextRunConfig): Promise<void> => {
    const { eachMessage, eachBatch, ...rest } = config;
    if ((eachMessage === undefined) === (eachBatch === undefined))
      throw new TypeError('ctxflow/kafka: run needs exactly one of eachMessage and eachBatch');
    if (bus !== undefined) await bus.start();
    if (beat === undefined) {
      beat = setInterval(heartbeatLongRunning, heartbeatMs);
      beat.unref();
    }
    if (eachMessage !== undefined) {
      return inner.run({
        ...rest,
        eachMessage: async ({ topic, partition, message, heartbeat }) => {
          await handle({ handler: eachMessage, topic, partition, message, heartbeat, batch: undefined });
        },
      });
    }
    const perMessage = eachBatch as MessageHandler;
    return inner.run({
      ...rest,
      eachBatchAutoResolve: false,
      eachBatch: async ({
        batch,
        resolveOffset,
        heartbeat,
        isRunning,
        isStale,
        commitOffsetsIfNecessary,
      }) => {
        for (const message of batch.messages) {
          if (!isRunning() || isStale()) return;
          await handle({
            handler: perMessage,
            topic: batch.topic,
            partition: batch.partition,
            message,
            heartbeat,
            batch,
          });
          resolveOffset(message.offset);
          await commitOffsetsIfNecessary();
          await heartbeat();
        }
      },
    });
  };

  const stop = async (): Promise<void> => {
    clearInterval(beat);
    beat = undefined;
    stopAll({ code: 'shutdown' });
    await inner.stop();
  };

  const disconnect = async (): Promise<void> => {
    clearInterval(beat);
    beat = undefined;
    stopAll({ code: 'shutdown' });
    unsubscribe?.();
    await inner.disconnect();
  };

  const wrapped = Object.assign(Object.create(inner) as Consumer, { run, stop, disconnect });
  // A getter of its own: Object.assign would copy the count once, as a number.
  return Object.defineProperty(wrapped, 'running', { get: () => running.size }) as ContextConsumer;
}

/** A process span per message, child of the producer's span and linked to it. */
function startSpan(topic: string, partition: number, message: KafkaMessage, parent: OtelContext): Span {
  const remote = trace.getSpanContext(parent);
  return tracer.startSpan(
    `${topic} process`,
    {
      kind: SpanKind.CONSUMER,
      links: remote === undefined ? [] : [{ context: remote }],
      attributes: {
        'messaging.system': 'kafka',
        'messaging.destination.name': topic,
        'messaging.destination.partition.id': String(partition),
        'messaging.kafka.offset': Number(message.offset),
        'messaging.operation.type': 'process',
      },
    },
    parent,
  );
}
