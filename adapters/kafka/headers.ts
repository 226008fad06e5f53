import type { TextMapGetter, TextMapSetter } from '@opentelemetry/api';
import type { IHeaders } from 'kafkajs';
import type { Transport } from '../../sdk/wire.ts';

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
