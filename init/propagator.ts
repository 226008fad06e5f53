/**
 * W3C baggage and a composite propagator, as `@opentelemetry/core` has them, so that `init()`
 * composes its propagator from `@opentelemetry/api` alone (without tracing the SDK packages need
 * not be installed).
 */
import {
  type Baggage,
  type BaggageEntry,
  baggageEntryMetadataFromString,
  diag,
  type Context as OtelContext,
  propagation,
  type TextMapGetter,
  type TextMapPropagator,
  type TextMapSetter,
} from '@opentelemetry/api';
import { isTracingSuppressed } from '../sdk/wire.ts';

const BAGGAGE = 'baggage';
// The W3C limits, as OpenTelemetry's propagator applies them.
const MAX_PAIRS = 180;
const MAX_PAIR_LENGTH = 4096;
const MAX_TOTAL_LENGTH = 8192;

function parsePair(entry: string): [string, BaggageEntry] | undefined {
  const semicolon = entry.indexOf(';');
  const pair = semicolon === -1 ? entry : entry.slice(0, semicolon);
  const equals = pair.indexOf('=');
  if (equals <= 0) return undefined;
  const rawKey = pair.slice(0, equals).trim();
  const rawValue = pair.slice(equals + 1).trim();
  if (rawKey === '' || rawValue === '') return undefined;
  try {
    const value: BaggageEntry = { value: decodeURIComponent(rawValue) };
    if (semicolon !== -1 && semicolon < entry.length - 1) {
      value.metadata = baggageEntryMetadataFromString(entry.slice(semicolon + 1));
    }
    return [decodeURIComponent(rawKey), value];
  } catch {
    return undefined;
  }
}

/** W3C baggage (`baggage` header), read and written as OpenTelemetry's W3CBaggagePropagator does. */
export class BaggagePropagator implements TextMapPropagator {
  inject(otelContext: OtelContext, carrier: unknown, setter: TextMapSetter): void {
    const baggage = propagation.getBaggage(otelContext);
    if (baggage === undefined || isTracingSuppressed(otelContext)) return;
    let header = '';
    let pairs = 0;
    for (const [key, entry] of baggage.getAllEntries()) {
      let pair = `${encodeURIComponent(key)}=${encodeURIComponent(entry.value)}`;
      if (entry.metadata !== undefined) pair += `;${entry.metadata.toString()}`;
      if (pair.length > MAX_PAIR_LENGTH) continue;
      const next = header === '' ? pair : `${header},${pair}`;
      if (next.length > MAX_TOTAL_LENGTH) continue;
      header = next;
      if (++pairs === MAX_PAIRS) break;
    }
    if (header !== '') setter.set(carrier, BAGGAGE, header);
  }

  extract(otelContext: OtelContext, carrier: unknown, getter: TextMapGetter): OtelContext {
    const sent = getter.get(carrier, BAGGAGE);
    if (sent === undefined || sent === '') return otelContext;
    const entries: Record<string, BaggageEntry> = {};
    let count = 0;
    let total = 0;
    for (const value of Array.isArray(sent) ? sent : [sent]) {
      for (const entry of value.split(',')) {
        if (count === MAX_PAIRS) break;
        if (entry.length > MAX_PAIR_LENGTH) continue;
        const pair = parsePair(entry);
        if (pair === undefined) continue;
        const size = (count === 0 ? 0 : 1) + entry.length;
        if (total + size > MAX_TOTAL_LENGTH) break;
        entries[pair[0]] = pair[1];
        count++;
        total += size;
      }
    }
    if (count === 0) return otelContext;
    const baggage: Baggage = propagation.createBaggage(entries);
    return propagation.setBaggage(otelContext, baggage);
  }

  fields(): string[] {
    return [BAGGAGE];
  }
}

/**
 * Several propagators as one: each injects in turn, each extracts from what the previous one made;
 * one that throws is reported through `diag` and skipped, so it never costs the others their headers.
 */
export class CompositePropagator implements TextMapPropagator {
  readonly #propagators: readonly TextMapPropagator[];

  constructor(propagators: readonly TextMapPropagator[]) {
    this.#propagators = propagators;
  }

  inject(otelContext: OtelContext, carrier: unknown, setter: TextMapSetter): void {
    for (const propagator of this.#propagators) {
      try {
        propagator.inject(otelContext, carrier, setter);
      } catch (error) {
        diag.warn(`ctxflow/init: ${propagator.constructor.name} failed to inject`, error);
      }
    }
  }

  extract(otelContext: OtelContext, carrier: unknown, getter: TextMapGetter): OtelContext {
    let extracted = otelContext;
    for (const propagator of this.#propagators) {
      try {
        extracted = propagator.extract(extracted, carrier, getter);
      } catch (error) {
        diag.warn(`ctxflow/init: ${propagator.constructor.name} failed to extract`, error);
      }
    }
    return extracted;
  }

  fields(): string[] {
    return [...new Set(this.#propagators.flatMap((propagator) => propagator.fields()))];
  }
}
