import { diag } from '@opentelemetry/api';
import {
  InstrumentationBase,
  type InstrumentationConfig,
  InstrumentationNodeModuleDefinition,
} from '@opentelemetry/instrumentation';
import type { Consumer, ConsumerConfig, Kafka, Producer } from 'kafkajs';
import { CancelBus } from '../adapters/kafka/bus.ts';
import { instrumentConsumer } from '../adapters/kafka/consumer.ts';
import { manage, yielded } from '../adapters/kafka/headers.ts';
import { producer as wrapProducer } from '../adapters/kafka/producer.ts';
import type { KafkaOptions } from './types.ts';
import { loadThroughHooks, unwrapOnTop, wrapOnTop } from './wrap.ts';

interface KafkaModule {
  Kafka: { prototype: Pick<Kafka, 'producer' | 'consumer'> };
}

/**
 * The cancel bus of one Kafka client of the application, connected while any of its producers or
 * consumers is (unless an adapter wraps it): an application that disconnects its clients gets a
 * process that can exit.
 */
function sharedBus(bus: CancelBus) {
  let users = 0;
  const warn = (error: unknown) => diag.warn('ctxflow: cancel bus', error);
  const share = (client: Producer | Consumer, wrapper: object): void => {
    let counted = false;
    const events = client.events as { CONNECT: string; DISCONNECT: string };
    const on = (client.on as (event: string, listener: () => void) => void).bind(client);
    on(events.CONNECT, () => {
      if (counted || yielded(wrapper)) return;
      counted = true;
      // Connected ahead of the first cancel, so that one is not slowed by it.
      if (users++ === 0) bus.connect().catch(warn);
    });
    on(events.DISCONNECT, () => {
      if (!counted) return;
      counted = false;
      if (--users === 0) bus.stop().catch(warn);
    });
  };
  return { bus, share };
}

const VERSIONS = ['>=2 <3'];

/**
 * Gives every kafkajs producer and consumer the Kafka adapter's behaviour as the application
 * loads kafkajs: `Kafka#producer` returns `producer()` of `ctxflow/kafka` around kafkajs's, and
 * `Kafka#consumer` a consumer whose `run` takes kafkajs's own handlers and gives them the
 * lifecycle of `consumer()`, both on a cancel bus of the application's Kafka client. Registered
 * after OpenTelemetry's kafkajs instrumentation, so that its process span is the active one when
 * ours builds the message's context.
 */
export class KafkaContextInstrumentation extends InstrumentationBase<InstrumentationConfig & KafkaOptions> {
  readonly #buses = new WeakMap<Kafka, ReturnType<typeof sharedBus> | undefined>();

  constructor(options: KafkaOptions = {}) {
    super('ctxflow-init-kafka', '0.1.0', options);
    loadThroughHooks('kafkajs');
  }

  #bus(kafka: Kafka) {
    if (this.#buses.has(kafka)) return this.#buses.get(kafka);
    const options = this.getConfig().cancelBus;
    const shared = options === false ? undefined : sharedBus(new CancelBus(kafka, options));
    this.#buses.set(kafka, shared);
    return shared;
  }

  #producer(made: Producer, kafka: Kafka): Producer {
    const shared = this.#bus(kafka);
    const wrapped = wrapProducer(made, { reserveMs: this.getConfig().reserveMs, cancelBus: shared?.bus });
    shared?.share(made, wrapped);
    return wrapped;
  }

  #consumer(made: Consumer, kafka: Kafka, config: ConsumerConfig): Consumer {
    const options = this.getConfig();
    const shared = this.#bus(kafka);
    // Dead letters go through a producer of the consumer's own Kafka client, made at the first one.
    let deadLetters: Promise<Producer> | undefined;
    made.on(made.events.DISCONNECT, () => {
      const producer = deadLetters;
      deadLetters = undefined;
      producer?.then((p) => p.disconnect()).catch(() => {});
    });
    const wrapped = instrumentConsumer(
      made,
      {
        ...options,
        sessionTimeout: config.sessionTimeout,
        rebalanceTimeout: config.rebalanceTimeout,
        // Often enough for kafkajs's own interval (its heartbeat() sends no more often than that).
        heartbeatIntervalMs: Math.min(1000, config.heartbeatInterval ?? 1000),
        cancelBus: shared?.bus,
      },
      () => {
        deadLetters ??= (async () => {
          const producer = manage(kafka.producer());
          await producer.connect();
          return producer;
        })();
        return deadLetters;
      },
    );
    shared?.share(made, wrapped);
    return wrapped;
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
              const made = original.apply(this, args);
              return self.isEnabled() ? self.#producer(made, this) : made;
            },
        );
        wrapOnTop(
          proto,
          'consumer',
          (original) =>
            function ctxflowConsumer(this: Kafka, ...args: Parameters<Kafka['consumer']>) {
              const made = original.apply(this, args);
              return self.isEnabled() ? self.#consumer(made, this, args[0]) : made;
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
