/**
 * ctxflow/kafka: context through Kafka (kafkajs 2.x). The producer sends each message with the
 * trace, the deadline (absolute and relative) and a request id; the consumer runs each message in
 * a context rebuilt from them; the cancel bus carries cancellations to every consumer instance.
 */
export type { CancelChannel, CancelListener } from '../../sdk/wire.ts';
export { CancelBus, type CancelBusOptions, cancelBus } from './bus.ts';
export {
  type ConsumerOptions,
  type ContextConsumer,
  type ContextRunConfig,
  consumer,
  contextOf,
  DEAD_LETTER_AT_HEADER,
  DEAD_LETTER_ATTEMPTS_HEADER,
  DEAD_LETTER_FROM_HEADER,
  type ExpiryPolicy,
  type MessageHandler,
  type MessagePayload,
} from './consumer.ts';
export { type ProducerOptions, producer } from './producer.ts';
