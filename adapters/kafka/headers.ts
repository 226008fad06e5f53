import type { TextMapGetter, TextMapSetter } from '@opentelemetry/api';
import type { IHeaders } from 'kafkajs';

type Raw = IHeaders[string];

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
