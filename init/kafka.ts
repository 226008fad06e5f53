import { context as otel, ROOT_CONTEXT, trace } from '@opentelemetry/api';
import {
  InstrumentationBase,
  type InstrumentationConfig,
  InstrumentationNodeModuleDefinition,
} from '@opentelemetry/instrumentation';
import type {
  Batch,
  Consumer,
  ConsumerConfig,
  ConsumerRunConfig,
  EachBatchPayload,
  EachMessagePayload,
  IHeaders,
  Kafka,
  KafkaMessage,
  Message,
  Producer,
  ProducerBatch,
  ProducerRecord,
  RecordMetadata,
} from 'kafkajs';
import { ATTR_OUTCOME, DEAD_LETTER_AT_HEADER, deadLetterHeaders } from '../adapters/kafka/consumer.ts';
import { contextHeaders, headersGetter, MANAGED } from '../adapters/kafka/headers.ts';
import { background, type CancelableContext, type Cause, current } from '../sdk/index.ts';
import {
  acceptInbound,
  countEnded,
  countKafkaMessage,
  countShed,
  errorFor,
  hopAttributes,
  type InboundCall,
  type InboundOptions,
  recordArrival,
  traceEnd,
  traceInbound,
} from '../sdk/wire.ts';
import type { KafkaOptions } from './types.ts';
import { loadThroughHooks, unwrapOnTop, wrapOnTop } from './wrap.ts';

interface KafkaModule {
  Kafka: { prototype: Pick<Kafka, 'producer' | 'consumer'> };
}

/** Per consumer: how each message's context is made and where its expired messages go. */
interface ConsumerState {
  readonly inbound: InboundOptions;
  /** For dead letters: their deadline has passed by definition; they get this service's budget alone. */
  readonly deadLetterInbound: InboundOptions;
  readonly groupId: string;
  readonly deadLetterTopic: ((topic: string) => string) | undefined;
  /** The dead-letter producer, made from the consumer's own Kafka client at the first dead letter. */
  deadLetters(): Promise<Producer>;
}

// A producer or consumer whose methods are ours already.
const EQUIPPED = Symbol('ctxflow.init.kafka');

const VERSIONS = ['>=2 <3'];

/** A consumed message's context; a dead letter (read back from its topic) is not expired again. */
function accept(state: ConsumerState, message: KafkaMessage): InboundCall {
  const headers = message.headers ?? {};
  const deadLetter = headers[DEAD_LETTER_AT_HEADER] !== undefined;
  return acceptInbound(headers, headersGetter, deadLetter ? state.deadLetterInbound : state.inbound);
}

/** Messages with the context's headers added, those the application set kept. */
function withHeaders(messages: Message[], ours: IHeaders): Message[] {
  if (Object.keys(ours).length === 0) return messages;
  return messages.map((message) => ({ ...message, headers: { ...ours, ...message.headers } }));
}

/** The batch as the handler sees it: without the messages dead-lettered. */
function withMessages(batch: Batch, messages: KafkaMessage[]): Batch {
  return messages.length === batch.messages.length
    ? batch
    : (Object.create(batch, { messages: { value: messages, enumerable: true } }) as Batch);
}

/**
 * Gives every kafkajs producer and consumer ctxflow's context as the application loads kafkajs.
 * `send`/`sendBatch` add the trace, `ctx-timeout` and `ctx-deadline` of `current()` to each
 * message (headers the application set are kept); `run`'s `eachMessage` handler runs in the
 * message's context, `eachBatch` in the context of its earliest deadline; each is cancelled when
 * the handler returns. Registered after OpenTelemetry's kafkajs instrumentation, so that its
 * process span is the active one when ours builds the message's context.
 */
export class KafkaContextInstrumentation extends InstrumentationBase<InstrumentationConfig & KafkaOptions> {
  constructor(options: KafkaOptions = {}) {
    super('ctxflow-init-kafka', '0.1.0', options);
    loadThroughHooks('kafkajs');
  }

  #equipProducer(producer: Producer & { [EQUIPPED]?: true; [MANAGED]?: true }): void {
    if (producer[EQUIPPED] === true) return;
    producer[EQUIPPED] = true;
    const { send, sendBatch } = producer;
    const headers = () => contextHeaders(current(), { reserveMs: this.getConfig().reserveMs });
    // A producer an adapter wraps carries the context already (`manage()` marks it after creation).
    const passThrough = () => !this.isEnabled() || producer[MANAGED] === true;
    // Under a context that has ended nothing is sent, as with every other client.
    const sendWithHeaders = <T>(
      original: (arg: T) => Promise<RecordMetadata[]>,
      target: Producer,
      arg: T,
      addHeaders: (arg: T, ours: IHeaders) => T,
    ): Promise<RecordMetadata[]> => {
      if (passThrough()) return original.call(target, arg);
      let ours: IHeaders;
      try {
        ours = headers();
      } catch (error) {
        return Promise.reject(error);
      }
      return original.call(target, addHeaders(arg, ours));
    };
    producer.send = function ctxflowSend(this: Producer, record: ProducerRecord) {
      return sendWithHeaders(send, this, record, (r, ours) => ({
        ...r,
        messages: withHeaders(r.messages, ours),
      }));
    };
    producer.sendBatch = function ctxflowSendBatch(this: Producer, batch: ProducerBatch) {
      return sendWithHeaders(sendBatch, this, batch, (b, ours) => ({
        ...b,
        topicMessages: b.topicMessages?.map((t) => ({ ...t, messages: withHeaders(t.messages, ours) })),
      }));
    };
  }

  #equipConsumer(
    consumer: Consumer & { [EQUIPPED]?: true; [MANAGED]?: true },
    kafka: Kafka,
    config: ConsumerConfig,
  ): void {
    if (consumer[EQUIPPED] === true) return;
    consumer[EQUIPPED] = true;
    const self = this;
    const options = this.getConfig();
    let producer: Promise<Producer> | undefined;
    const inbound: InboundOptions = {
      prefer: 'deadline',
      budgetMs: Math.min(
        options.budgetMs ?? 30_000,
        config.sessionTimeout ?? 30_000,
        config.rebalanceTimeout ?? 60_000,
      ),
      trustInbound: options.trustInbound,
      maxInboundMs: options.maxInboundMs,
      skewAllowanceMs: options.skewAllowanceMs,
    };
    const state: ConsumerState = {
      inbound,
      deadLetterInbound: { ...inbound, trustInbound: false },
      groupId: config.groupId,
      deadLetterTopic: options.deadLetterTopic,
      deadLetters() {
        producer ??= (async () => {
          const made = kafka.producer();
          await made.connect();
          return made;
        })();
        return producer;
      },
    };
    consumer.on(consumer.events.DISCONNECT, () => {
      const made = producer;
      producer = undefined;
      made?.then((p) => p.disconnect()).catch(() => {});
    });
    const { run } = consumer;
    consumer.run = function ctxflowRun(runConfig?: ConsumerRunConfig) {
      // A consumer an adapter wraps (ctxflow/kafka's consumer, the cancel bus) builds its own contexts.
      if (!self.isEnabled() || runConfig === undefined || consumer[MANAGED] === true) {
        return run.call(this, runConfig);
      }
      const { eachMessage, eachBatch } = runConfig;
      const wrapped: ConsumerRunConfig = { ...runConfig };
      if (eachMessage !== undefined) {
        wrapped.eachMessage = (payload) => self.#eachMessage(state, eachMessage, payload);
      }
      if (eachBatch !== undefined) {
        wrapped.eachBatch = (payload) => self.#eachBatch(state, eachBatch, payload);
      }
      return run.call(this, wrapped);
    };
  }

  async #deadLetter(
    state: ConsumerState,
    topic: string,
    partition: number,
    message: KafkaMessage,
    cause: Cause,
  ) {
    const deadLetterTopic = state.deadLetterTopic as (topic: string) => string;
    const from = `${state.groupId} ${topic}/${partition}@${message.offset}`;
    const producer = await state.deadLetters();
    // The message's own context is over: the dead letter is sent from the root context.
    await otel.with(ROOT_CONTEXT, () =>
      background().run(() =>
        producer.send({
          topic: deadLetterTopic(topic),
          messages: [
            {
              key: message.key,
              value: message.value,
              headers: deadLetterHeaders(message, cause, from, 0),
              timestamp: message.timestamp,
            },
          ],
        }),
      ),
    );
    countKafkaMessage(topic, 'dead-lettered', cause.code);
  }

  /**
   * Runs `handler` in `call`'s context and cancels that once it returns. A context that ended
   * before (`expired`) shows on the active span: the process span of OpenTelemetry's
   * instrumentation, when tracing is on.
   */
  async #run<T>(topic: string, call: InboundCall, expired: boolean, handler: () => Promise<T>): Promise<T> {
    const ctx: CancelableContext = call.ctx;
    const attributes = hopAttributes('kafka', topic);
    recordArrival(attributes, call.budgetMs);
    const span = trace.getSpan(otel.active());
    if (expired) span?.setAttribute(ATTR_OUTCOME, 'expired');
    const untrace = traceInbound(span, ctx, call.budgetMs);
    try {
      return await otel.with(call.otelContext, handler);
    } finally {
      untrace();
      const cause = ctx.cause;
      if (cause !== undefined) countEnded(attributes, cause.code);
      ctx.cancel();
    }
  }

  async #eachMessage(
    state: ConsumerState,
    handler: (payload: EachMessagePayload) => Promise<void>,
    payload: EachMessagePayload,
  ): Promise<void> {
    const { topic, partition, message } = payload;
    const call = accept(state, message);
    const ctx = call.ctx;
    if (ctx.done) {
      const cause = ctx.cause ?? { code: 'deadline_exceeded' };
      if (state.deadLetterTopic !== undefined) {
        const span = trace.getSpan(otel.active());
        countShed(hopAttributes('kafka', topic));
        if (span !== undefined) {
          traceEnd(span, errorFor(cause));
          span.setAttribute(ATTR_OUTCOME, 'dead-lettered');
        }
        return this.#deadLetter(state, topic, partition, message, cause);
      }
      countKafkaMessage(topic, 'expired', cause.code);
      return this.#run(topic, call, true, () => handler(payload));
    }
    return this.#run(topic, call, false, () => handler(payload));
  }

  async #eachBatch(
    state: ConsumerState,
    handler: (payload: EachBatchPayload) => Promise<void>,
    payload: EachBatchPayload,
  ): Promise<void> {
    const { batch } = payload;
    // A batch of control records only: nothing to build a context from.
    if (batch.messages.length === 0) return handler(payload);
    const live: KafkaMessage[] = [];
    let earliest: InboundCall | undefined;
    let expired = false;
    for (const message of batch.messages) {
      const call = accept(state, message);
      const ctx = call.ctx;
      if (ctx.done) {
        const cause = ctx.cause ?? { code: 'deadline_exceeded' };
        if (state.deadLetterTopic !== undefined) {
          countShed(hopAttributes('kafka', batch.topic));
          await this.#deadLetter(state, batch.topic, batch.partition, message, cause);
          continue;
        }
        expired = true;
        countKafkaMessage(batch.topic, 'expired', cause.code);
      }
      live.push(message);
      // The batch's handler gets the earliest deadline of its messages: never more than any had.
      if (earliest === undefined || (ctx.deadline ?? Infinity) < (earliest.ctx.deadline ?? Infinity)) {
        earliest?.ctx.cancel();
        earliest = call;
      } else {
        ctx.cancel();
      }
    }
    if (earliest === undefined) {
      // Every message was dead-lettered: the handler has nothing to do; their offsets are done.
      for (const message of batch.messages) payload.resolveOffset(message.offset);
      return;
    }
    const handed = { ...payload, batch: withMessages(batch, live) };
    return this.#run(batch.topic, earliest, expired, () => handler(handed));
  }

  protected init(): InstrumentationNodeModuleDefinition {
    const self = this;
    return new InstrumentationNodeModuleDefinition(
      'kafkajs',
      VERSIONS,
      (exports: KafkaModule) => {
        const proto = exports.Kafka.prototype;
        wrapOnTop(
          proto,
          'producer',
          (original) =>
            function ctxflowProducer(this: Kafka, ...args: Parameters<Kafka['producer']>) {
              const producer = original.apply(this, args);
              if (self.isEnabled()) self.#equipProducer(producer);
              return producer;
            },
        );
        wrapOnTop(
          proto,
          'consumer',
          (original) =>
            function ctxflowConsumer(this: Kafka, ...args: Parameters<Kafka['consumer']>) {
              const consumer = original.apply(this, args);
              if (self.isEnabled()) self.#equipConsumer(consumer, this, args[0]);
              return consumer;
            },
        );
        return exports;
      },
      (exports: KafkaModule) => {
        const proto = exports.Kafka.prototype;
        unwrapOnTop(proto, 'producer');
        unwrapOnTop(proto, 'consumer');
      },
    );
  }
}

/** A wrapper in the form shimmer (and so every OpenTelemetry instrumentation) recognizes and can undo. */
