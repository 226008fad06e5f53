import { randomUUID } from 'node:crypto';
import { diag, context as otel, ROOT_CONTEXT } from '@opentelemetry/api';
import type { Consumer, IHeaders, Kafka, Producer } from 'kafkajs';
import type { Cause } from '../../sdk/index.ts';
import {
  CANCEL_REASON_HEADER,
  type CancelChannel,
  CancelRegistry,
  DEFAULT_MAX_INBOUND_MS,
  decodeCause,
  decodeRequestId,
  encodeCause,
  REQUEST_ID_HEADER,
} from '../../sdk/wire.ts';
import type { CancelBusOptions } from './bus-options.ts';
import { headersGetter, manage } from './headers.ts';
import { countCancelDropped, recordCancelDelay } from './metrics.ts';

export type { CancelBusOptions } from './bus-options.ts';

/**
 * A Kafka topic that carries cancellations from producers to every consumer instance. Producers
 * publish a cancel event when a context they sent under is cancelled; each process reads the
 * whole bus with a reader of its own (a consumer group unique to the instance, no offsets
 * committed), starting `horizonMs` back (offsets by timestamp), so every instance learns every
 * cancellation that can still matter, including those from before it started. Kafka's
 * `CancelChannel`.
 */
export class CancelBus extends CancelRegistry implements CancelChannel {
  readonly topic: string;
  readonly horizonMs: number;
  readonly #kafka: Kafka;
  readonly #options: CancelBusOptions;
  #producer: Producer | undefined;
  #producerReady: Promise<void> | undefined;
  #reader: Consumer | undefined;
  #started: Promise<void> | undefined;
  // After stop(), a late cancellation must not connect a new producer that nothing would close.
  #stopped = false;

  constructor(kafka: Kafka, options: CancelBusOptions = {}) {
    const horizonMs = options.horizonMs ?? DEFAULT_MAX_INBOUND_MS;
    super({ horizonMs, maxEntries: options.maxEntries ?? 100_000 });
    this.horizonMs = horizonMs;
    this.#kafka = kafka;
    this.#options = options;
    this.topic = options.topic ?? 'ctxflow.cancel';
  }

  /** Publishes that the context sent as `requestId` ended with `cause`; does nothing once stopped. */
  async publish(requestId: string, cause: Cause): Promise<void> {
    if (this.#stopped) return;
    this.#producerReady ??= this.#connectProducer();
    await this.#producerReady;
    const at = Date.now();
    await (this.#producer as Producer).send({
      topic: this.topic,
      messages: [
        {
          key: requestId,
          value: JSON.stringify({ requestId, reason: encodeCause(cause), at }),
          headers: { [REQUEST_ID_HEADER]: requestId, [CANCEL_REASON_HEADER]: encodeCause(cause) },
        },
      ],
    });
  }

  /** Connects the publishing side ahead of the first cancel, so that one is not slowed by it. */
  connect(): Promise<void> {
    this.#stopped = false;
    this.#producerReady ??= this.#connectProducer();
    return this.#producerReady;
  }

  /** Starts this instance's reader; resolves once it has read the bus up to its end at start. */
  start(): Promise<void> {
    this.#stopped = false;
    // A start that failed (a broker down, no rights on the topic) is tried again by the next one.
    this.#started ??= this.#startReader().catch((error: unknown) => {
      this.#started = undefined;
      throw error;
    });
    return this.#started;
  }

  /** Stops the reader and disconnects the publishing side. */
  async stop(): Promise<void> {
    this.#stopped = true;
    const reader = this.#reader;
    const producer = this.#producer;
    this.#reader = undefined;
    this.#producer = undefined;
    this.#started = undefined;
    this.#producerReady = undefined;
    await Promise.all([reader?.disconnect(), producer?.disconnect()]);
  }

  async #connectProducer(): Promise<void> {
    const producer = manage(this.#kafka.producer({ allowAutoTopicCreation: true }));
    this.#producer = producer;
    // A broker down now must not fail every later publish: the next one connects again.
    await producer.connect().catch((error: unknown) => {
      this.#producerReady = undefined;
      throw error;
    });
  }

  /**
   * Creates the bus topic unless it exists: asked first, because kafkajs logs a broker's refusal to
   * create an existing topic as an error, in the application's log, at every start.
   */
  async #ensureTopic(): Promise<void> {
    const admin = this.#kafka.admin();
    await admin.connect();
    try {
      if ((await admin.listTopics()).includes(this.topic)) return;
      await admin.createTopics({
        waitForLeaders: true,
        topics: [
          {
            topic: this.topic,
            numPartitions: this.#options.partitions ?? 1,
            // Undefined is kafkajs's default: the broker's.
            replicationFactor: this.#options.replicationFactor,
          },
        ],
      });
    } finally {
      await admin.disconnect();
    }
  }

  async #startReader(): Promise<void> {
    await this.#ensureTopic();
    const admin = this.#kafka.admin();
    await admin.connect();
    let from: { partition: number; offset: string }[];
    let ends: { partition: number; high: string }[];
    try {
      from = await admin.fetchTopicOffsetsByTimestamp(this.topic, Date.now() - this.horizonMs);
      ends = await admin.fetchTopicOffsets(this.topic);
    } finally {
      await admin.disconnect();
    }
    // What is left to read before the reader has seen every event published before it started.
    const pending = new Map<number, bigint>();
    for (const { partition, high } of ends) {
      const start = BigInt(from.find((f) => f.partition === partition)?.offset ?? high);
      if (BigInt(high) > start) pending.set(partition, BigInt(high) - 1n);
    }
    // Stopped while starting: no reader that nothing would disconnect.
    if (this.#stopped) return;
    const reader = manage(
      this.#kafka.consumer({
        // A group of its own: every instance reads every event. It commits nothing, so the broker
        // forgets the group once it is empty.
        groupId: `ctxflow-cancel-${randomUUID()}`,
        maxWaitTimeInMs: 100,
      }),
    );
    this.#reader = reader;
    const { promise: ready, resolve: caughtUp } = Promise.withResolvers<void>();
    if (pending.size === 0) caughtUp();
    await reader.connect();
    if (this.#stopped) {
      await reader.disconnect();
      return;
    }
    await reader.subscribe({ topic: this.topic, fromBeginning: false });
    // Bus events are not work of any request: read them from the root context.
    await otel.with(ROOT_CONTEXT, () =>
      reader.run({
        autoCommit: false,
        eachMessage: async ({ partition, message }) => {
          this.#read(message.headers ?? {}, Number(message.timestamp));
          const last = pending.get(partition);
          if (last !== undefined && BigInt(message.offset) >= last) {
            pending.delete(partition);
            if (pending.size === 0) caughtUp();
          }
        },
      }),
    );
    for (const { partition, offset } of from) reader.seek({ topic: this.topic, partition, offset });
    const timeoutMs = this.#options.catchUpTimeoutMs ?? 10_000;
    const timer = setTimeout(() => {
      diag.warn(`ctxflow: cancel bus ${this.topic} not read to its end after ${timeoutMs} ms`);
      caughtUp();
    }, timeoutMs);
    await ready;
    clearTimeout(timer);
  }

  #read(headers: IHeaders, publishedAt: number): void {
    const requestId = decodeRequestId(headersGetter.get(headers, REQUEST_ID_HEADER));
    const cause = decodeCause(headersGetter.get(headers, CANCEL_REASON_HEADER));
    if (requestId === undefined || cause === undefined) {
      countCancelDropped(this.topic);
      return;
    }
    // The reader's lag: from the cancel's publication (the broker's timestamp) to this instance.
    if (Number.isFinite(publishedAt)) recordCancelDelay(this.topic, 'read', Date.now() - publishedAt);
    this.record(requestId, cause, publishedAt);
  }
}

/** A cancel bus on `kafka` (see CancelBus). */
export function cancelBus(kafka: Kafka, options?: CancelBusOptions): CancelBus {
  return new CancelBus(kafka, options);
}
