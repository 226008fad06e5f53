import { setTimeout as sleep } from 'node:timers/promises';
import {
  type Attributes,
  diag,
  type Context as OtelContext,
  context as otel,
  ProxyTracerProvider,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  trace,
} from '@opentelemetry/api';
import type {
  Batch,
  Consumer,
  ConsumerRunConfig,
  EachBatchPayload,
  EachMessagePayload,
  IHeaders,
  KafkaMessage,
  Producer,
} from 'kafkajs';
import {
  background,
  type CancelableContext,
  type Cause,
  type Context,
  setContext,
  withCancel,
  withDeadline,
} from '../../sdk/index.ts';
import type { Shutdown } from '../../sdk/resilience/index.ts';
import {
  ATTR_BUDGET_ARRIVAL,
  acceptInbound,
  CANCEL_REASON_HEADER,
  type CancelChannel,
  decodeRequestId,
  encodeCause,
  errorFor,
  hopAttributes,
  type InboundCall,
  type InboundOptions,
  REQUEST_ID_HEADER,
  traceEnd,
} from '../../sdk/wire.ts';
import { headersGetter, KAFKA, manage, recordGetter, yielded } from './headers.ts';
import { countMessage, recordCancelDelay } from './metrics.ts';

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
  /** Cancel events (a `CancelBus`, or any `CancelChannel`): handlers of a cancelled request are cancelled, its queued messages refused. */
  cancelBus?: CancelChannel;
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

/** Work running now, stopped by a rebalance or a stop; a request's cancel through the bus reaches it by id. */
interface Running {
  readonly ctx: CancelableContext;
  readonly requestId: string | undefined;
  /** kafkajs's heartbeat while it runs longer than the interval; none for a message inside a batch handler. */
  readonly heartbeat: (() => Promise<void>) | undefined;
  /** The heartbeat timer's tick when it started: due a heartbeat two ticks on. */
  readonly since: number;
  redeliver: boolean;
  /** Its index in `RunningWork` while it is there, else -1. */
  slot: number;
  /** Ends its tracking once its work is over: counted, untraced, its context released. */
  finish(): void;
}

/**
 * The work running now: an array in which each entry knows its index, so that adding and removing
 * one costs no hashing (a Set gives each message an identity hash, and rehashes as entries come
 * and go, on the path of every message).
 */
class RunningWork {
  readonly #entries: Running[] = [];

  get size(): number {
    return this.#entries.length;
  }

  add(entry: Running): void {
    entry.slot = this.#entries.length;
    this.#entries.push(entry);
  }

  /** Takes `entry` out, the last entry moving into its place; nothing when it is not there. */
  delete(entry: Running): void {
    const slot = entry.slot;
    if (slot < 0) return;
    const last = this.#entries.pop() as Running;
    if (last !== entry) {
      this.#entries[slot] = last;
      last.slot = slot;
    }
    entry.slot = -1;
  }

  /** A copy to iterate: stopping or heartbeating an entry must not move the others under the loop. */
  list(): Running[] {
    return this.#entries.slice();
  }
}

type Outcome = 'handled' | 'skipped' | 'dead-lettered';

function noop(): void {}

/** An unchanged kafkajs eachMessage handler (init()), or a handler of ctxflow's payload. */
type AnyHandler = MessageHandler | ((payload: EachMessagePayload) => Promise<void>);

/**
 * A message taken from the queue with its inbound call: handed over, or not (`refused`); while
 * handed over, running work. One object per message, its methods shared.
 */
class Arrival implements Running {
  readonly topic: string;
  readonly partition: number;
  readonly message: KafkaMessage;
  readonly requestId: string | undefined;
  /** Its context, and its arrival, trace and end, each counted once. */
  readonly call: InboundCall;
  readonly span: Span | undefined;
  /** The span is kafkajs instrumentation's, which ends it. */
  readonly instrumented: boolean;
  /** Handed over although expired or cancelled (`onExpired` `process`, or init()'s ended context). */
  expired = false;
  /** Handed over in a context already ended (under init() with no dead-letter topic): counted as expired only. */
  endedOnArrival = false;
  heartbeat: (() => Promise<void>) | undefined = undefined;
  since = 0;
  redeliver = false;
  slot = -1;
  #running: RunningWork | undefined = undefined;

  constructor(
    topic: string,
    partition: number,
    message: KafkaMessage,
    requestId: string | undefined,
    call: InboundCall,
    span: Span | undefined,
    instrumented: boolean,
  ) {
    this.topic = topic;
    this.partition = partition;
    this.message = message;
    this.requestId = requestId;
    this.call = call;
    this.span = span;
    this.instrumented = instrumented;
  }

  get ctx(): CancelableContext {
    return this.call.ctx;
  }

  /** Registers the message as running in `running` since tick `since`, traced, until `finish`. */
  begin(running: RunningWork, heartbeat: (() => Promise<void>) | undefined, since: number): void {
    this.call.trace(this.span);
    this.heartbeat = heartbeat;
    this.since = since;
    this.#running = running;
    running.add(this);
  }

  finish(): void {
    this.#running?.delete(this);
    const call = this.call;
    // Complete unless the context ended before the handler did: the release is no cancellation.
    call.finish(this.endedOnArrival || !call.ctx.done);
    if (!this.instrumented) this.span?.end();
  }
}

/** An unchanged eachBatch handler's own context (init()): not a message, its end is each message's. */
class BatchRun implements Running {
  readonly ctx: CancelableContext;
  readonly requestId = undefined;
  readonly heartbeat: () => Promise<void>;
  readonly since: number;
  redeliver = false;
  slot = -1;
  readonly #running: RunningWork;

  constructor(running: RunningWork, ctx: CancelableContext, heartbeat: () => Promise<void>, since: number) {
    this.ctx = ctx;
    this.heartbeat = heartbeat;
    this.since = since;
    this.#running = running;
    running.add(this);
  }

  finish(): void {
    this.#running.delete(this);
    this.ctx.cancel();
  }
}

/**
 * What sets a lifecycle apart beyond the consumer's options: where dead letters are sent from, and
 * whether it runs an unchanged kafkajs application's handlers (`init()`: no retries of its own, a
 * failing handler thrown to kafkajs, expired messages handed over in their ended contexts without
 * a dead-letter topic; docs/init.md).
 */
export interface Wiring {
  readonly deadLetters: () => Promise<Producer>;
  readonly unchanged: boolean;
}

const REBALANCE_ERRORS = new Set(['REBALANCE_IN_PROGRESS', 'ILLEGAL_GENERATION', 'UNKNOWN_MEMBER_ID']);
// A proxy: it takes up the real tracer whenever a tracing SDK registers one.
const tracer = trace.getTracer('ctxflow/kafka');
// What the global proxy delegates to until a tracing SDK registers a provider.
const NO_TRACER_PROVIDER = new ProxyTracerProvider().getDelegate();

/** Whether a tracing SDK is registered: without one a span is a no-op object, not worth making per message. */
function tracing(): boolean {
  const provider = trace.getTracerProvider();
  return !(provider instanceof ProxyTracerProvider) || provider.getDelegate() !== NO_TRACER_PROVIDER;
}
// The context of each message of a batch handed whole to an unchanged eachBatch handler (init()).
const contexts = new WeakMap<KafkaMessage, Context>();

/**
 * The context of a message of the batch an `eachBatch` handler runs on under `init()`: its own
 * deadline, cancelled through the cancel bus with its request, by a rebalance, and when the batch
 * handler returns. Undefined for any other message.
 */
export function contextOf(message: KafkaMessage): Context | undefined {
  return contexts.get(message);
}

/**
 * The per-message lifecycle of a consumer, shared by `consumer()` and `init()`: each message's
 * context, the expiry policy, the cancel bus, rebalances, heartbeats of long handlers, retries and
 * dead letters, counting and tracing.
 */
function lifecycle(inner: Consumer, options: ConsumerOptions, wiring: Wiring) {
  const { cancelBus: bus, shutdown: coordinator, unchanged } = { ...options, ...wiring };
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
  const deadLetterInbound: InboundOptions = { ...inbound, trustInbound: false };
  // The metric attributes of each topic, made once (hopAttributes builds a key per call).
  const topicAttributes = new Map<string, Attributes>();
  const attributesOf = (topic: string): Attributes => {
    let attributes = topicAttributes.get(topic);
    if (attributes === undefined) {
      attributes = hopAttributes(KAFKA, topic);
      topicAttributes.set(topic, attributes);
    }
    return attributes;
  };
  // `ended`: handed to the handler in its context already ended.
  const onExpired: ExpiryPolicy | 'ended' =
    unchanged && options.deadLetterTopic === undefined ? 'ended' : (options.onExpired ?? 'dead-letter');
  const retries = unchanged ? 0 : (options.retries ?? 2);
  const heartbeatMs = options.heartbeatIntervalMs ?? 1000;
  const deadLetterTopic = options.deadLetterTopic ?? ((topic: string) => `${topic}.dead-letter`);
  const running = new RunningWork();
  // The heartbeat timer's ticks so far: work started at tick n has run at least one whole interval
  // by tick n + 2, and no clock is read per message.
  let ticks = 0;
  let groupId = '';
  let beat: NodeJS.Timeout | undefined;
  let unsubscribe: (() => void) | undefined;

  function stopAll(cause: Cause): void {
    for (const entry of running.list()) stopOne(entry, cause);
  }

  function stopOne(entry: Running, cause: Cause): void {
    entry.redeliver = true;
    entry.ctx.cancel(cause);
  }

  // One timer for the whole consumer, not one per message: it heartbeats for the handlers that
  // have run longer than the interval (kafkajs only heartbeats between messages), which also
  // notices a rebalance.
  const heartbeatLongRunning = () => {
    const due = ++ticks - 2;
    for (const entry of running.list()) {
      if (entry.since > due || entry.heartbeat === undefined) continue;
      entry.heartbeat().catch((error: { type?: string }) => {
        if (REBALANCE_ERRORS.has(error?.type ?? '')) stopAll({ code: 'rebalance' });
      });
    }
  };

  inner.on(inner.events.GROUP_JOIN, (event) => {
    groupId = event.payload.groupId;
  });
  // kafkajs revokes every partition on a rebalance (eager protocol): every running handler's
  // message may now belong to another instance.
  inner.on(inner.events.REBALANCING, () => stopAll({ code: 'rebalance' }));

  /** Before each run: the bus read to its end, its cancels listened to, the heartbeat timer. */
  async function start(): Promise<void> {
    unsubscribe ??= bus?.onCancel((requestId, cause, publishedAt) => {
      for (const entry of running.list()) {
        if (entry.requestId !== requestId) continue;
        entry.ctx.cancel(cause);
        // From the cancel's publication to the running handler's abort, on this instance.
        recordCancelDelay(bus.topic, 'abort', Date.now() - publishedAt);
      }
    });
    if (bus !== undefined) {
      // An unchanged application did not ask for the bus (init() turns it on): without it, its
      // consumer still runs, cancels from other processes aside. A consumer given one explicitly
      // fails to start instead, and the next run tries again.
      await bus.start().catch((error: unknown) => {
        if (!unchanged) throw error;
        diag.warn(`ctxflow/kafka: cancel bus ${bus.topic} not started; consuming without it`, error);
      });
    }
    if (beat === undefined) {
      beat = setInterval(heartbeatLongRunning, heartbeatMs);
      beat.unref();
    }
  }

  /** Before a stop or disconnect: running handlers cancelled with `shutdown`, for redelivery; `start` undoes the rest. */
  const ending = (then: () => Promise<void>) => async () => {
    clearInterval(beat);
    beat = undefined;
    unsubscribe?.();
    unsubscribe = undefined;
    stopAll({ code: 'shutdown' });
    await then();
  };

  /** `inner` with `run`, and `stop`/`disconnect` that first stop what runs (kafkajs's other methods kept). */
  function wrap<R>(run: R): Omit<Consumer, 'run'> & { run: R } {
    return Object.assign(Object.create(inner) as Consumer, {
      run,
      stop: ending(() => inner.stop()),
      disconnect: ending(() => inner.disconnect()),
    });
  }

  async function deadLetter(arrival: Arrival, cause: Cause, attempts: number): Promise<void> {
    const { topic, partition, message } = arrival;
    // The message's own headers, its cause, when, where from and after how many runs of its handler.
    const headers: IHeaders = {
      ...message.headers,
      [CANCEL_REASON_HEADER]: encodeCause(cause),
      [DEAD_LETTER_AT_HEADER]: String(Date.now()),
      [DEAD_LETTER_FROM_HEADER]: `${groupId} ${topic}/${partition}@${message.offset}`,
      [DEAD_LETTER_ATTEMPTS_HEADER]: String(attempts),
    };
    const producer = await wiring.deadLetters();
    // The message's own context is over: the dead letter is sent from the root context.
    await otel.with(ROOT_CONTEXT, () =>
      background().run(() =>
        producer.send({
          topic: deadLetterTopic(topic),
          messages: [{ key: message.key, value: message.value, headers, timestamp: message.timestamp }],
        }),
      ),
    );
    countMessage(topic, 'dead-lettered', cause.code);
  }

  /** Builds a message's inbound call (its arrival is recorded once its fate is decided). */
  function accept(
    topic: string,
    partition: number,
    message: KafkaMessage,
    base: OtelContext,
    traced: boolean,
  ): Arrival {
    const headers = message.headers;
    // A dead letter's request has ended by definition: its handling is not expired or cancelled again.
    const deadLetter = headers?.[DEAD_LETTER_AT_HEADER] !== undefined;
    const requestId =
      deadLetter || headers?.[REQUEST_ID_HEADER] === undefined
        ? undefined
        : decodeRequestId(headersGetter.get(headers, REQUEST_ID_HEADER));
    const options = deadLetter ? deadLetterInbound : inbound;
    const call =
      base === otel.active()
        ? acceptInbound(message, recordGetter, options)
        : otel.with(base, acceptInbound, undefined, message, recordGetter, options);
    call.attributes = attributesOf(topic);
    // kafkajs instrumentation already runs eachMessage under a process span of its own: ours go
    // on it, and it ends it.
    const theirs = trace.getSpan(base);
    const instrumented = theirs !== undefined;
    const span = !traced
      ? undefined
      : (theirs ?? (tracing() ? startSpan(topic, partition, message, call.otelContext) : undefined));
    return new Arrival(topic, partition, message, requestId, call, span, instrumented);
  }

  /**
   * Applies the expiry policy to a message cancelled through the bus or expired in the queue: the
   * outcome when it is not handed over; undefined when it is (its context and `expired` updated).
   * Synchronous for a message handed over: no await on the path of every message.
   */
  function refuse(arrival: Arrival): Promise<Outcome> | undefined {
    const { call, requestId } = arrival;
    const cancelled = requestId === undefined ? undefined : bus?.cancelled(requestId);
    const ctx = call.ctx;
    // Expired in the queue: judged at its arrival, the instant its deadline was computed at.
    if (cancelled === undefined && call.budgetMs !== 0) return undefined;
    const cause = cancelled ?? ctx.cause ?? { code: 'deadline_exceeded' };
    if (cancelled === undefined) arrival.span?.setAttribute(ATTR_BUDGET_ARRIVAL, 0);
    if (onExpired === 'ended' || (onExpired === 'process' && cancelled === undefined)) {
      arrival.expired = true;
      countMessage(arrival.topic, 'expired', cause.code);
      if (onExpired === 'ended') ctx.cancel(cause);
      else call.renew(budgetMs);
      return undefined;
    }
    // Its fate, decided here, is its whole answer: its context's end is no end of work to count.
    call.finish(true);
    return notHandled(arrival, cause);
  }

  /** A message not handed over: skipped or dead-lettered, counted, and on its span with its cause. */
  async function notHandled(arrival: Arrival, cause: Cause): Promise<Outcome> {
    const span = arrival.span;
    if (span !== undefined) traceEnd(span, errorFor(cause));
    let outcome: Outcome = 'skipped';
    if (onExpired === 'skip' || onExpired === 'process') countMessage(arrival.topic, 'skipped', cause.code);
    else {
      await deadLetter(arrival, cause, 0);
      outcome = 'dead-lettered';
    }
    span?.setAttribute(ATTR_OUTCOME, outcome);
    if (!arrival.instrumented) span?.end();
    return outcome;
  }

  /** Registers a message handed over as running, traced, until its `finish`. */
  function beginMessage(arrival: Arrival, heartbeat: (() => Promise<void>) | undefined): void {
    // Handed over in a context already ended (under init() with no dead-letter topic): counted as
    // `expired` in the Kafka metric, not again as an end of work.
    arrival.endedOnArrival = arrival.expired && onExpired === 'ended';
    arrival.begin(running, heartbeat, ticks);
  }

  /**
   * Handles one message: `handler` gets ctxflow's payload, or kafkajs's own (`unchanged`, init()'s
   * eachMessage handlers).
   */
  function handle(
    handler: AnyHandler,
    unchangedPayload: EachMessagePayload | undefined,
    topic: string,
    partition: number,
    message: KafkaMessage,
    heartbeat: () => Promise<void>,
    batch: Batch | undefined,
  ): Promise<void> {
    // Not an async function itself: without a shutdown, no promise of its own per message.
    const admitted = coordinator?.admit(background());
    // Under a graceful shutdown, a message not started before it began is left to the partition's next owner.
    if (coordinator !== undefined && admitted === undefined) {
      return Promise.reject(new Redeliver('shutting down'));
    }
    const handled = handleAdmitted(
      handler,
      unchangedPayload,
      topic,
      partition,
      message,
      heartbeat,
      batch,
      admitted?.ctx,
    );
    return admitted === undefined ? handled : handled.finally(() => admitted.end());
  }

  /** Handles one message; `admission`'s end (the shutdown's grace running out) stops its handler for redelivery. */
  function handleAdmitted(
    handler: AnyHandler,
    unchangedPayload: EachMessagePayload | undefined,
    topic: string,
    partition: number,
    message: KafkaMessage,
    heartbeat: () => Promise<void>,
    batch: Batch | undefined,
    admission: Context | undefined,
  ): Promise<void> {
    // Not an async function: its frame, kept across the handler's await, would hold every local
    // here. A throw is a rejection all the same.
    try {
      // In eachBatch the active context is kafkajs instrumentation's receive span, not the message's.
      const base = batch === undefined ? otel.active() : ROOT_CONTEXT;
      const arrival = accept(topic, partition, message, base, true);
      const refused = refuse(arrival);
      if (refused !== undefined) return refused.then(noop);
      beginMessage(arrival, heartbeat);
      const unadmit = admission === undefined ? undefined : stopOnEnd(admission, arrival);
      const payload: MessagePayload | EachMessagePayload = unchangedPayload ?? {
        topic,
        partition,
        message,
        ctx: arrival.call.ctx,
        requestId: arrival.requestId,
        expired: arrival.expired,
        heartbeat,
        batch,
      };
      return runHandler(handler, arrival, payload, unadmit);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** Stops `arrival`'s handler, for redelivery, when `admission` ends; returns the undoing of that. */
  function stopOnEnd(admission: Context, arrival: Arrival): () => void {
    return admission.onDone((error) => stopOne(arrival, error.cause));
  }

  /** Runs the handler of a message handed over, retried after a failure, then dead-lettered; ends its tracking. */
  async function runHandler(
    handler: AnyHandler,
    arrival: Arrival,
    payload: object,
    unadmit: (() => void) | undefined,
  ): Promise<void> {
    const { call, span } = arrival;
    // kafkajs instrumentation's span is in the active context already.
    const otelContext =
      span === undefined || arrival.instrumented ? call.otelContext : trace.setSpan(call.otelContext, span);
    let attempts = 0;
    try {
      for (;;) {
        attempts++;
        try {
          await otel.with(otelContext, handler as (payload: object) => Promise<void>, undefined, payload);
          if (span !== undefined) {
            span.setStatus({ code: SpanStatusCode.OK });
            span.setAttribute(ATTR_OUTCOME, 'handled');
          }
          return;
        } catch (error) {
          if (!(await retrying(arrival, error, attempts))) return;
        }
      }
    } finally {
      unadmit?.();
      arrival.finish();
    }
  }

  /**
   * After a failure of a message's handler: true to run it again (after the backoff); false once it
   * is dead-lettered; throws for kafkajs (init()) and for redelivery (a rebalance or a stop).
   */
  async function retrying(arrival: Arrival, error: unknown, attempts: number): Promise<boolean> {
    if (unchanged) throw error;
    const { call, span } = arrival;
    const ctx = call.ctx;
    if (arrival.redeliver) throw new Redeliver(`handler stopped: ${ctx.cause?.code}`);
    const cause = ctx.cause;
    if (cause !== undefined || attempts > retries) {
      span?.setStatus({ code: SpanStatusCode.ERROR, message: cause?.code ?? 'error' });
      await deadLetter(arrival, cause ?? { code: 'error' }, attempts);
      span?.setAttribute(ATTR_OUTCOME, 'dead-lettered');
      return false;
    }
    await sleep(options.retryBackoffMs ?? 100, undefined, { signal: ctx.signal }).catch(() => {});
    if (arrival.redeliver) throw new Redeliver(`handler stopped: ${ctx.cause?.code}`);
    return true;
  }

  /**
   * Runs an unchanged eachBatch handler (init()) on kafkajs's payload: messages refused by the
   * expiry policy left out of the batch it gets, each other message with its own context
   * (`contextOf`), the handler in a context ending at the earliest of their deadlines.
   */
  async function handleBatch(
    payload: EachBatchPayload,
    handler: (payload: EachBatchPayload) => Promise<void>,
  ): Promise<void> {
    const { batch } = payload;
    // A batch of control records only: nothing to build a context from.
    if (batch.messages.length === 0) return handler(payload);
    const live: KafkaMessage[] = [];
    const entries: Running[] = [];
    let deadline = Infinity;
    try {
      for (const message of batch.messages) {
        const arrival = accept(batch.topic, batch.partition, message, ROOT_CONTEXT, false);
        const refused = refuse(arrival);
        if (refused !== undefined) {
          await refused;
          continue;
        }
        live.push(message);
        beginMessage(arrival, undefined);
        entries.push(arrival);
        contexts.set(message, arrival.call.ctx);
        deadline = Math.min(deadline, arrival.call.ctx.deadline ?? Infinity);
      }
      if (live.length === 0) {
        // Every message was dead-lettered or skipped: the handler has nothing to do; their offsets are done.
        for (const message of batch.messages) payload.resolveOffset(message.offset);
        return;
      }
      const ctx = Number.isFinite(deadline) ? withDeadline(background(), deadline) : withCancel(background());
      // Not a message: its end is each message's, counted there.
      entries.push(new BatchRun(running, ctx, payload.heartbeat, ticks));
      const handed =
        live.length === batch.messages.length ? payload : { ...payload, batch: withMessages(batch, live) };
      await otel.with(setContext(otel.active(), ctx), () => handler(handed));
    } finally {
      for (const entry of entries) entry.finish();
    }
  }

  return {
    start,
    handle,
    handleBatch,
    wrap,
    get running() {
      return running.size;
    },
  };
}

/** The batch as the handler sees it: without the messages refused. */
function withMessages(batch: Batch, messages: KafkaMessage[]): Batch {
  return Object.create(batch, { messages: { value: messages, enumerable: true } }) as Batch;
}

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
  const dlq = options.deadLetterProducer;
  if (dlq === undefined) throw new TypeError('ctxflow/kafka: consumer() needs deadLetterProducer');
  const life = lifecycle(inner, options, { deadLetters: async () => dlq, unchanged: false });

  // On shutdown kafkajs's own stop starts no further message and lets the running ones finish,
  // committing each batch's handled offsets before it leaves the group; the drain awaits it.
  let stopping: Promise<void> | undefined;
  options.shutdown?.onStop(() => {
    stopping = inner.stop();
    return stopping;
  });
  options.shutdown?.onDrain(async () => {
    try {
      await stopping;
    } finally {
      await wrapped.disconnect();
    }
  });

  const run = async (config: ContextRunConfig): Promise<void> => {
    const { eachMessage, eachBatch, ...rest } = config;
    if ((eachMessage === undefined) === (eachBatch === undefined))
      throw new TypeError('ctxflow/kafka: run needs exactly one of eachMessage and eachBatch');
    await life.start();
    if (eachMessage !== undefined) {
      return inner.run({
        ...rest,
        eachMessage: (payload) =>
          life.handle(
            eachMessage,
            undefined,
            payload.topic,
            payload.partition,
            payload.message,
            payload.heartbeat,
            undefined,
          ),
      });
    }
    const perMessage = eachBatch as MessageHandler;
    return inner.run({
      ...rest,
      eachBatchAutoResolve: false,
      eachBatch: async (payload) => {
        const { batch, heartbeat } = payload;
        const { topic, partition } = batch;
        for (const message of batch.messages) {
          if (!payload.isRunning() || payload.isStale()) return;
          await life.handle(perMessage, undefined, topic, partition, message, heartbeat, batch);
          payload.resolveOffset(message.offset);
          await payload.commitOffsetsIfNecessary();
          await heartbeat();
        }
      },
    });
  };

  const wrapped = life.wrap(run);
  // A getter of its own: Object.assign would copy the count once, as a number.
  return Object.defineProperty(wrapped, 'running', { get: () => life.running }) as ContextConsumer;
}

/**
 * A kafkajs consumer whose `run` takes kafkajs's own handlers and gives them the lifecycle of
 * `consumer()` (init()'s hook): each eachMessage handler in its message's context, an eachBatch
 * handler in the earliest deadline of its batch with each message's context from `contextOf`;
 * kafkajs's retries and error path for failing handlers. Wrapped again by `consumer()`, it leaves
 * the context to that one.
 */
export function instrumentConsumer(
  inner: Consumer,
  options: ConsumerOptions,
  deadLetters: () => Promise<Producer>,
): Consumer {
  const life = lifecycle(inner, options, { deadLetters, unchanged: true });
  const wrapped = life.wrap(async (config?: ConsumerRunConfig): Promise<void> => {
    if (config === undefined || yielded(wrapped)) return inner.run(config);
    await life.start();
    const { eachMessage, eachBatch } = config;
    return inner.run({
      ...config,
      ...(eachMessage && {
        eachMessage: (payload: EachMessagePayload) =>
          life.handle(
            eachMessage,
            payload,
            payload.topic,
            payload.partition,
            payload.message,
            payload.heartbeat,
            undefined,
          ),
      }),
      ...(eachBatch && { eachBatch: (payload: EachBatchPayload) => life.handleBatch(payload, eachBatch) }),
    });
  });
  return wrapped;
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
