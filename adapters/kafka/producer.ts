import { randomBytes } from 'node:crypto';
import { diag, context as otel, ROOT_CONTEXT } from '@opentelemetry/api';
import type { IHeaders, Message, Producer, ProducerBatch, ProducerRecord, RecordMetadata } from 'kafkajs';
import { type Context, current } from '../../sdk/index.ts';
import {
  type CancelChannel,
  DEADLINE_HEADER,
  type OutboundOptions,
  REQUEST_ID_HEADER,
  startOutbound,
  TIMEOUT_HEADER,
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
 * `traceparent`, and `ctx-deadline` (absolute, so that time in the queue counts) with the record's
 * timestamp set to the producer's clock at the same instant, which gives the consumer what
 * `ctx-timeout` would (docs/wire-format.md, "Kafka: one deadline header"); and, when a cancel bus
 * can name the context's messages, `ctx-request-id`. A message with a timestamp or a ctxflow
 * deadline header of its own gets `ctx-timeout` too. Headers the application set on a message are
 * kept as set. Sending under a done context rejects with its error and sends nothing. With a
 * cancel bus, a context that sent messages and then ends with a cause other than plain
 * `cancelled` (its normal end) publishes a cancel event naming them. The other methods are the
 * wrapped producer's. Wrapped again by `producer()` (or `init()`'s wrapper by an explicit one), it
 * leaves the context to the outer one.
 */
export function producer(inner: Producer, options: ProducerOptions = {}): Producer {
  manage(inner);
  const bus = options.cancelBus;
  const outbound: OutboundOptions = { reserveMs: options.reserveMs, sendDeadline: true };

  /**
   * The context's request id, made and watched on first use; undefined when no cancel event can
   * ever name it: no bus to publish one, or a root context (`background()`, `withoutCancel()`),
   * which never ends.
   */
  const requestIdFor = (ctx: Context): string | undefined => {
    if (bus === undefined) return undefined;
    let id = requestIds.get(ctx);
    if (id !== undefined) return id;
    if (!canEnd(ctx)) return undefined;
    id = randomBytes(12).toString('base64url');
    requestIds.set(ctx, id);
    watch(ctx, id, bus);
    return id;
  };

  // The headers are the same for every message of a send: written once, shared by its messages.
  // Under a done context startOutbound throws its error. kafkajs cannot take a message back once
  // handed over: nothing to abort afterwards.
  const decorate = (ctx: Context, messages: Message[]): Message[] => {
    const shared = !writesIntoHeaders(inner);
    const written: IHeaders = {};
    startOutbound({ ctx, carrier: written, setter: headersSetter, abort: noop, options: outbound })();
    const requestId = requestIdFor(ctx);
    if (requestId !== undefined) written[REQUEST_ID_HEADER] = requestId;
    const timeout = written[TIMEOUT_HEADER];
    // Without a deadline there is nothing to fold: the headers go as written.
    if (timeout === undefined || written[DEADLINE_HEADER] === undefined) {
      return messages.map((message) => withHeaders(message, written, message.timestamp, shared));
    }
    // `ctx-deadline` minus the record's timestamp is `ctx-timeout`: both were read off the same
    // clock at the same instant (startOutbound's), so the timestamp is set here, not by kafkajs.
    const sentAt = String(Number(written[DEADLINE_HEADER]) - Number(timeout));
    const folded = withoutKey(written, TIMEOUT_HEADER);
    return messages.map((message) =>
      ownsTimeOrDeadline(message)
        ? withHeaders(message, written, message.timestamp, shared)
        : withHeaders(message, folded, sentAt, shared),
    );
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

/** The message with ctxflow's headers under its own, and its timestamp; `ours` itself when `shared`. */
function withHeaders(
  message: Message,
  ours: IHeaders,
  timestamp: string | undefined,
  shared: boolean,
): Message {
  const headers =
    message.headers === undefined ? (shared ? ours : { ...ours }) : { ...ours, ...message.headers };
  return { ...message, timestamp, headers };
}

/**
 * Whether OpenTelemetry's kafkajs instrumentation wrapped the producer's `send` (its wrapper is
 * marked `__wrapped`): it writes each message's own trace parent into that message's headers
 * object, so messages must not share one.
 */
function writesIntoHeaders(inner: Producer): boolean {
  return '__wrapped' in inner.send;
}

/**
 * A message whose timestamp, or whose deadline header, the application set (a relay forwarding a
 * message, an event time): the record's timestamp does not say when ctxflow's deadline was
 * written, so the message carries `ctx-timeout` as well.
 */
function ownsTimeOrDeadline(message: Message): boolean {
  if (message.timestamp !== undefined) return true;
  const headers = message.headers;
  return (
    headers !== undefined && (headers[TIMEOUT_HEADER] !== undefined || headers[DEADLINE_HEADER] !== undefined)
  );
}

function withoutKey(headers: IHeaders, key: string): IHeaders {
  const copy: IHeaders = {};
  for (const name of Object.keys(headers)) if (name !== key) copy[name] = headers[name];
  return copy;
}

/**
 * Whether a context can end at all. ctxflow's contexts hold their parent; a root (`background()`,
 * `withoutCancel()`) has none and never ends. Any other implementation of `Context` may end.
 */
function canEnd(ctx: Context): boolean {
  return !('parent' in ctx) || (ctx as { parent?: unknown }).parent !== undefined;
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
