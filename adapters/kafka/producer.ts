import { randomBytes } from 'node:crypto';
import { diag, context as otel, ROOT_CONTEXT } from '@opentelemetry/api';
import type { IHeaders, Message, Producer, ProducerBatch, ProducerRecord, RecordMetadata } from 'kafkajs';
import { type Context, current } from '../../sdk/index.ts';
import {
  type CancelChannel,
  type OutboundOptions,
  REQUEST_ID_HEADER,
  startOutbound,
} from '../../sdk/wire.ts';
import { headersSetter, manage, yielded } from './headers.ts';

/** How the producer writes the context into each message. */
export interface ProducerOptions extends Pick<OutboundOptions, 'reserveMs'> {
  /** Where to publish a cancel event when a context that sent messages is cancelled (a `CancelBus`, or any `CancelChannel`). */
  cancelBus?: CancelChannel;
}

// One id per context sent under, so every message of a request is named by one cancel event.
const requestIds = new WeakMap<Context, string>();

/**
 * Wraps a kafkajs producer so that every message sent carries the context of `current()`:
 * `traceparent`, `ctx-timeout` and `ctx-deadline` (absolute, so that time in the queue counts)
 * and `ctx-request-id`; headers the application set on a message are kept as set. Sending under a
 * done context rejects with its error and sends nothing. With a cancel bus, a context that sent
 * messages and then ends with a cause other than plain `cancelled` (its normal end) publishes a
 * cancel event naming them. The other methods are the wrapped producer's. Wrapped again by
 * `producer()` (or `init()`'s wrapper by an explicit one), it leaves the context to the outer one.
 */
export function producer(inner: Producer, options: ProducerOptions = {}): Producer {
  manage(inner);
  const bus = options.cancelBus;

  const requestIdFor = (ctx: Context): string => {
    let id = requestIds.get(ctx);
    if (id !== undefined) return id;
    id = randomBytes(12).toString('base64url');
    requestIds.set(ctx, id);
    if (bus !== undefined) watch(ctx, id, bus);
    return id;
  };

  // The headers are the same for every message of a send: written once, copied per message. They
  // are the trace, `ctx-timeout` and `ctx-deadline`; under a done context startOutbound throws its
  // error. kafkajs cannot take a message back once handed over: nothing to abort afterwards.
  const decorate = (ctx: Context, messages: Message[]): Message[] => {
    const ours: IHeaders = {};
    startOutbound({
      ctx,
      carrier: ours,
      setter: headersSetter,
      abort: noop,
      options: { reserveMs: options.reserveMs, sendDeadline: true },
    })();
    ours[REQUEST_ID_HEADER] = requestIdFor(ctx);
    return messages.map((message) => ({
      ...message,
      headers: message.headers === undefined ? ours : { ...ours, ...message.headers },
    }));
  };

  const send = async (record: ProducerRecord): Promise<RecordMetadata[]> => {
    if (yielded(wrapped)) return inner.send(record);
    return inner.send({ ...record, messages: decorate(current(), record.messages) });
  };

  const sendBatch = async (batch: ProducerBatch): Promise<RecordMetadata[]> => {
    if (yielded(wrapped)) return inner.sendBatch(batch);
    const ctx = current();
    const topicMessages = batch.topicMessages?.map((t) => ({ ...t, messages: decorate(ctx, t.messages) }));
    return inner.sendBatch({ ...batch, topicMessages });
  };

  const wrapped = Object.assign(Object.create(inner) as Producer, { send, sendBatch });
  return wrapped;
}

/**
 * Publishes a cancel event for `id` when `ctx` ends with any cause but plain `cancelled`: that one
 * is the normal end of a request (`cancel()` without a cause, `using` leaving its scope), after
 * which the messages it sent are still meant to be handled.
 */
function watch(ctx: Context, id: string, bus: CancelChannel): void {
  ctx.onDone(() => {
    const cause = ctx.cause;
    if (cause === undefined || cause.code === 'cancelled') return;
    // Not work of the cancelled request: published from the root context.
    otel.with(ROOT_CONTEXT, () =>
      bus
        .publish(id, cause)
        .catch((error: unknown) => diag.error('ctxflow: cancel event not published', error)),
    );
  });
}

function noop(): void {}
