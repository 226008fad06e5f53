import type { TextMapGetter, TextMapSetter } from '@opentelemetry/api';
import type { IHeaders, KafkaMessage } from 'kafkajs';
import { DEADLINE_HEADER, TIMEOUT_HEADER, type Transport } from '../../sdk/wire.ts';

/** The transport as ctxflow's metrics name it. */
export const KAFKA: Transport = { name: 'kafka', operationKey: 'messaging.destination.name' };

type Raw = IHeaders[string];

/**
 * Set on a kafkajs producer or consumer that an adapter of ctxflow wraps (or uses itself), so that
 * `init()`'s kafkajs hook leaves it to the adapter rather than carrying the context twice.
 */
export const MANAGED = Symbol.for('ctxflow.kafka.managed');

/** Marks a kafkajs producer or consumer as wrapped by an adapter (`MANAGED`). */
export function manage<T extends object>(client: T): T {
  (client as { [MANAGED]?: true })[MANAGED] = true;
  return client;
}

/** Whether a wrapper of ctxflow's was itself wrapped by an adapter since (`manage()`d, not by inheritance): the outer one carries the context. */
export function yielded(client: object): boolean {
  return Object.hasOwn(client, MANAGED);
}

function text(value: Buffer | string): string {
  // toString() without arguments skips Buffer's encoding lookup: UTF-8 straight away.
  return typeof value === 'string' ? value : value.toString();
}

/**
 * Reads kafkajs record headers: a Buffer (what the consumer receives), a string (what a producer
 * passed), or an array of either (a repeated key). Anything else reads as absent.
 */
export const headersGetter: TextMapGetter<IHeaders> = {
  keys: (carrier) => Object.keys(carrier),
  get: (carrier, key) => {
    const value: Raw | unknown = carrier[key];
    if (value === undefined) return undefined;
    if (typeof value === 'string' || Buffer.isBuffer(value)) return text(value);
    if (Array.isArray(value)) {
      const values = value.filter((v): v is Buffer | string => typeof v === 'string' || Buffer.isBuffer(v));
      return values.map(text);
    }
    return undefined;
  },
};

/** Writes string header values, replacing any value already under the key. */
export const headersSetter: TextMapSetter<IHeaders> = {
  set: (carrier, key, value) => {
    carrier[key] = value;
  },
};

const NO_HEADERS: IHeaders = Object.freeze({});
/** kafkajs's `timestampType` of a record batch whose timestamps are the broker's append times. */
const LOG_APPEND_TIME = 1;
/** The largest `ctx-timeout` (8 digits). */
const MAX_TIMEOUT_MS = 99_999_999;

/**
 * Reads a Kafka record's headers as `headersGetter` does, with one addition: a record that carries
 * `ctx-deadline` and no `ctx-timeout` reads as carrying the `ctx-timeout` its producer had, the
 * deadline minus the record's timestamp. ctxflow's producer writes the two from one reading of its
 * clock; any producer's CreateTime is its clock at send. A broker's LogAppendTime is not the
 * producer's clock: such a record implies nothing (docs/wire-format.md, "Kafka: one deadline header").
 */
export const recordGetter: TextMapGetter<KafkaMessage> = {
  keys: (record) => Object.keys(record.headers ?? NO_HEADERS),
  get: (record, key) => {
    const headers = record.headers ?? NO_HEADERS;
    const value = headersGetter.get(headers, key);
    if (value !== undefined || key !== TIMEOUT_HEADER) return value;
    return impliedTimeout(record, headers[DEADLINE_HEADER]);
  },
};

/** `ctx-deadline` minus the record's timestamp, as a `ctx-timeout` value; undefined when it cannot be told. */
function impliedTimeout(record: KafkaMessage, deadline: Raw): string | undefined {
  if (deadline === undefined) return undefined;
  const batch = (record as { batchContext?: { timestampType?: number } }).batchContext;
  if (batch?.timestampType === LOG_APPEND_TIME) return undefined;
  // A malformed deadline implies nothing: its own decoding counts what is wrong with it.
  const at = epochMs(deadline);
  if (at === undefined) return undefined;
  const sentAt = Number(record.timestamp);
  if (!Number.isSafeInteger(sentAt) || sentAt <= 0) return undefined;
  const ms = at - sentAt;
  // Sent after its deadline by its own clock: nothing was left. A timestamp far older than the
  // deadline (an event time kept by a relay) bounds nothing.
  if (ms > MAX_TIMEOUT_MS) return undefined;
  return String(Math.max(0, ms));
}

const DEADLINE_DIGITS = 13;
const ZERO = 0x30;

/** A 13-digit epoch-ms header value, read off its bytes (no string made); undefined for anything else. */
function epochMs(value: Buffer | string | (Buffer | string)[]): number | undefined {
  if (Array.isArray(value) || value.length !== DEADLINE_DIGITS) return undefined;
  let ms = 0;
  for (let i = 0; i < DEADLINE_DIGITS; i++) {
    const digit = (typeof value === 'string' ? value.charCodeAt(i) : (value[i] as number)) - ZERO;
    if (digit < 0 || digit > 9) return undefined;
    ms = ms * 10 + digit;
  }
  return ms;
}
