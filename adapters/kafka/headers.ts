import type { TextMapGetter, TextMapSetter } from '@opentelemetry/api';
import type { IHeaders } from 'kafkajs';
import type { Context } from '../../sdk/index.ts';
import { type OutboundOptions, startOutbound, type Transport } from '../../sdk/wire.ts';

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

function text(value: Buffer | string): string {
  return typeof value === 'string' ? value : value.toString('utf8');
}

/**
 * Reads kafkajs record headers: a Buffer (what the consumer receives), a string (what a producer
 * passed), or an array of either (a repeated key). Anything else reads as absent.
 */
export const headersGetter: TextMapGetter<IHeaders> = {
  keys: (carrier) => Object.keys(carrier),
  get: (carrier, key) => {
    const value: Raw | unknown = carrier[key];
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

/**
 * The headers every message sent under `ctx` carries: the trace, `ctx-timeout` and `ctx-deadline`
 * (absolute, so that time in the queue counts). Throws the context's error when it is done:
 * nothing may be sent under it.
 */
export function contextHeaders(ctx: Context, options: Pick<OutboundOptions, 'reserveMs'> = {}): IHeaders {
  const headers: IHeaders = {};
  // kafkajs cannot take a message back once it is handed over: nothing to abort after this.
  startOutbound({
    ctx,
    carrier: headers,
    setter: headersSetter,
    abort: noop,
    options: { reserveMs: options.reserveMs, sendDeadline: true },
  })();
  return headers;
}

function noop(): void {}
