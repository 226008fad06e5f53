/**
 * W3C trace context (`traceparent`, `tracestate`), read and written as OpenTelemetry's
 * W3CTraceContextPropagator does, by character codes rather than its regular expressions: the
 * propagator of the path with no tracing SDK, where it runs on every request of every hop.
 */
import {
  createTraceState,
  type Context as OtelContext,
  type SpanContext,
  type TextMapGetter,
  type TextMapPropagator,
  type TextMapSetter,
  TraceFlags,
  trace,
} from '@opentelemetry/api';
import { isTracingSuppressed } from './otel-keys.ts';

const TRACEPARENT = 'traceparent';
const TRACESTATE = 'tracestate';
// version-traceid-spanid-flags: 2 + 1 + 32 + 1 + 16 + 1 + 2 characters.
const TRACEPARENT_LENGTH = 55;
const DASH = 0x2d;

/** Reads and writes `traceparent` and `tracestate`; equivalent to OpenTelemetry's W3C propagator. */
export class TraceContextPropagator implements TextMapPropagator {
  inject(otelContext: OtelContext, carrier: unknown, setter: TextMapSetter): void {
    const spanContext = trace.getSpanContext(otelContext);
    if (spanContext === undefined || isTracingSuppressed(otelContext)) return;
    const header = formatTraceparent(spanContext);
    if (header === undefined) return;
    setter.set(carrier, TRACEPARENT, header);
    if (spanContext.traceState !== undefined)
      setter.set(carrier, TRACESTATE, spanContext.traceState.serialize());
  }

  extract(otelContext: OtelContext, carrier: unknown, getter: TextMapGetter): OtelContext {
    const spanContext = this.extractSpanContext(carrier, getter);
    return spanContext === undefined ? otelContext : trace.setSpanContext(otelContext, spanContext);
  }

  /** The remote span context the carrier names, or undefined: `extract` without the context to put it in. */
  extractSpanContext(carrier: unknown, getter: TextMapGetter): SpanContext | undefined {
    const sent = getter.get(carrier, TRACEPARENT);
    const header = Array.isArray(sent) ? sent[0] : sent;
    if (typeof header !== 'string') return undefined;
    const spanContext = parseTraceparent(header);
    if (spanContext === undefined) return undefined;
    const state = getter.get(carrier, TRACESTATE);
    if (state !== undefined && state !== '') {
      spanContext.traceState = createTraceState(Array.isArray(state) ? state.join(',') : state);
    }
    return spanContext;
  }

  fields(): string[] {
    return [TRACEPARENT, TRACESTATE];
  }
}

/**
 * The remote span context a `traceparent` value names, or undefined when it is not valid: lower-case
 * hex fields, a version other than `ff`, ids not all zeros; a version `00` value has nothing after
 * the flags, a later version may have more after a dash. One leading and one trailing whitespace
 * character are allowed.
 */
export function parseTraceparent(header: string): SpanContext | undefined {
  let start = 0;
  let end = header.length;
  if (end > start && isSpace(header.charCodeAt(start))) start++;
  if (end - start > TRACEPARENT_LENGTH && isSpace(header.charCodeAt(end - 1))) end--;
  if (end - start < TRACEPARENT_LENGTH) return undefined;
  if (
    header.charCodeAt(start + 2) !== DASH ||
    header.charCodeAt(start + 35) !== DASH ||
    header.charCodeAt(start + 52) !== DASH
  ) {
    return undefined;
  }
  if (!isHex(header, start, start + 2, true) || header.startsWith('ff', start)) return undefined;
  if (end - start > TRACEPARENT_LENGTH) {
    // Later versions may append fields; version 00 may not.
    if (header.startsWith('00', start) || header.charCodeAt(start + TRACEPARENT_LENGTH) !== DASH)
      return undefined;
  }
  if (!isHex(header, start + 3, start + 35, false) || !isHex(header, start + 36, start + 52, false)) {
    return undefined;
  }
  if (!isHex(header, start + 53, start + 55, true)) return undefined;
  return {
    traceId: header.slice(start + 3, start + 35),
    spanId: header.slice(start + 36, start + 52),
    traceFlags: Number.parseInt(header.slice(start + 53, start + 55), 16),
    isRemote: true,
  };
}

/** The `traceparent` value of a span context (version 00), or undefined when its ids are not valid. */
export function formatTraceparent(spanContext: SpanContext): string | undefined {
  const { traceId, spanId } = spanContext;
  if (traceId.length !== 32 || spanId.length !== 16) return undefined;
  if (!isHex(traceId, 0, 32, false, true) || !isHex(spanId, 0, 16, false, true)) return undefined;
  const flags = (spanContext.traceFlags || TraceFlags.NONE) & 0xff;
  return `00-${traceId}-${spanId}-${flags < 16 ? '0' : ''}${flags.toString(16)}`;
}

/**
 * True when `text[from, to)` is hex digits, lower-case unless `anyCase`, and not all zeros unless
 * `zeroAllowed`.
 */
function isHex(text: string, from: number, to: number, zeroAllowed: boolean, anyCase = false): boolean {
  let nonZero = zeroAllowed;
  for (let i = from; i < to; i++) {
    let code = text.charCodeAt(i);
    if (anyCase && code >= 0x41 && code <= 0x46) code += 0x20;
    if (code >= 0x30 && code <= 0x39) {
      if (code !== 0x30) nonZero = true;
    } else if (code >= 0x61 && code <= 0x66) {
      nonZero = true;
    } else {
      return false;
    }
  }
  return nonZero;
}

/** The characters `\s` matches in a regular expression. */
function isSpace(code: number): boolean {
  if (code <= 0xa0) return code === 0x20 || (code >= 0x09 && code <= 0x0d) || code === 0xa0;
  return (
    code === 0x1680 ||
    (code >= 0x2000 && code <= 0x200a) ||
    code === 0x2028 ||
    code === 0x2029 ||
    code === 0x202f ||
    code === 0x205f ||
    code === 0x3000 ||
    code === 0xfeff
  );
}
