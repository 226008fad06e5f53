import type { TextMapGetter, TextMapSetter } from '@opentelemetry/api';
import { DEFAULT_RESERVE_MS, type HeaderValue, single } from './codec.ts';
import { countRejected, type RejectReason } from './metrics.ts';

/** gRPC's relative timeout, `<1-8 digits><unit>` (H M S m u n): sent on plain HTTP by gRPC-Web clients and gateways. */
export const GRPC_TIMEOUT_HEADER = 'grpc-timeout';
/** Connect's relative timeout, 1 to 10 digits of milliseconds: sent by Connect clients on every call. */
export const CONNECT_TIMEOUT_HEADER = 'connect-timeout-ms';
/** The timeout in milliseconds an Envoy router enforces on this request, told to the service behind it. */
export const ENVOY_TIMEOUT_HEADER = 'x-envoy-expected-rq-timeout-ms';

/** A deadline header of another stack that inbound sides can honour. */
export type ForeignHeader =
  | typeof GRPC_TIMEOUT_HEADER
  | typeof CONNECT_TIMEOUT_HEADER
  | typeof ENVOY_TIMEOUT_HEADER;

/** A deadline header of another stack that HTTP clients can also write (Envoy's is written by Envoy only). */
export type ForeignOutboundHeader = typeof GRPC_TIMEOUT_HEADER | typeof CONNECT_TIMEOUT_HEADER;

/** The foreign headers HTTP clients can also write. */
export const FOREIGN_OUTBOUND_HEADERS: readonly ForeignOutboundHeader[] = Object.freeze([
  GRPC_TIMEOUT_HEADER,
  CONNECT_TIMEOUT_HEADER,
]);

/** Every foreign header, the default set an inbound side honours behind a trusted hop. */
export const FOREIGN_HEADERS: readonly ForeignHeader[] = Object.freeze([
  GRPC_TIMEOUT_HEADER,
  CONNECT_TIMEOUT_HEADER,
  ENVOY_TIMEOUT_HEADER,
]);

const GRPC_TIMEOUT = /^([0-9]+)([HMSmun])$/;
const DIGITS = /^[0-9]+$/;
const GRPC_MAX_DIGITS = 8;
const CONNECT_MAX_DIGITS = 10;
/** Envoy writes a uint64 and never 0 (its "no timeout"); 10 digits is 115 days, far past any cap. */
const ENVOY_MAX_DIGITS = 10;
const GRPC_MAX_VALUE = 99_999_999;
const CONNECT_MAX_VALUE = 9_999_999_999;
/** The grpc-timeout units an encoder picks from, smallest first, with their size in milliseconds. */
const GRPC_UNITS: readonly (readonly [string, number])[] = [
  ['m', 1],
  ['S', 1000],
  ['M', 60_000],
  ['H', 3_600_000],
];

/** Milliseconds of a grpc-timeout (sub-millisecond units rounded down), or why it is refused. */
function parseGrpcTimeout(text: string): number | RejectReason {
  const match = GRPC_TIMEOUT.exec(text);
  const digits = match?.[1];
  if (match === null || digits === undefined) return 'malformed';
  if (digits.length > GRPC_MAX_DIGITS) return 'too_large';
  const value = Number(digits);
  switch (match[2]) {
    case 'H':
      return value * 3_600_000;
    case 'M':
      return value * 60_000;
    case 'S':
      return value * 1000;
    case 'm':
      return value;
    case 'u':
      return Math.floor(value / 1000);
    default:
      return Math.floor(value / 1_000_000);
  }
}

/** Plain decimal milliseconds of at most `maxDigits`, or why they are refused. */
function parseMillis(text: string, maxDigits: number, zeroAllowed: boolean): number | RejectReason {
  if (!DIGITS.test(text)) return 'malformed';
  if (text.length > maxDigits) return 'too_large';
  const value = Number(text);
  return value === 0 && !zeroAllowed ? 'malformed' : value;
}

/** The milliseconds a foreign header's value grants, or why it is refused; undefined for an unknown header. */
function parse(header: string, text: string): number | RejectReason | undefined {
  switch (header) {
    case GRPC_TIMEOUT_HEADER:
      return parseGrpcTimeout(text);
    case CONNECT_TIMEOUT_HEADER:
      return parseMillis(text, CONNECT_MAX_DIGITS, true);
    case ENVOY_TIMEOUT_HEADER:
      return parseMillis(text, ENVOY_MAX_DIGITS, false);
    default:
      return undefined;
  }
}

/**
 * Decodes one foreign header into a budget in whole milliseconds; a malformed, repeated or
 * over-long value gives undefined and is counted by header and reason. Surrounding HTTP
 * whitespace is ignored, as for ctxflow's own headers.
 */
export function decodeForeign(header: ForeignHeader, value: HeaderValue): number | undefined {
  const raw = single(header, value);
  if (raw === undefined) return undefined;
  const parsed = parse(header, raw.trim());
  if (typeof parsed === 'number') return parsed;
  if (parsed !== undefined) countRejected(header, parsed);
  return undefined;
}

/**
 * The earliest deadline (epoch ms) the honoured foreign headers of a carrier grant, each budget
 * cut to `maxInboundMs` (and counted as `clamped`), or undefined when none grants one. Allocates
 * nothing when none of them is present.
 */
export function foreignDeadline(
  carrier: unknown,
  getter: TextMapGetter,
  headers: readonly ForeignHeader[],
  maxInboundMs: number,
  now: number,
): number | undefined {
  let earliest: number | undefined;
  for (let i = 0; i < headers.length; i++) {
    const header = headers[i] as ForeignHeader;
    const value = getter.get(carrier, header);
    if (value === undefined) continue;
    let ms = decodeForeign(header, value);
    if (ms === undefined) continue;
    if (ms > maxInboundMs) {
      countRejected(header, 'clamped');
      ms = maxInboundMs;
    }
    if (earliest === undefined || now + ms < earliest) earliest = now + ms;
  }
  return earliest;
}

/** Throws a TypeError naming the first entry of an inbound side's `foreignHeaders` option that is not a foreign header. */
export function checkForeignHeaders(headers: readonly string[] | undefined): void {
  for (const header of headers ?? []) {
    if (!(FOREIGN_HEADERS as readonly string[]).includes(header)) {
      throw new TypeError(
        `ctxflow: unknown foreign deadline header ${JSON.stringify(header)}; known: ${FOREIGN_HEADERS.join(', ')}`,
      );
    }
  }
}

/** Encodes a budget of whole milliseconds for grpc-timeout: in `m` when it fits 8 digits, else in the largest unit that does, rounded down. */
export function encodeGrpcTimeout(ms: number): string {
  const budget = Math.max(0, Math.floor(ms));
  for (const [unit, size] of GRPC_UNITS) {
    const value = Math.floor(budget / size);
    if (value <= GRPC_MAX_VALUE) return `${value}${unit}`;
  }
  return `${GRPC_MAX_VALUE}H`;
}

/** Encodes a budget of whole milliseconds for connect-timeout-ms, at most 10 digits. */
export function encodeConnectTimeout(ms: number): string {
  return String(Math.min(CONNECT_MAX_VALUE, Math.max(0, Math.floor(ms))));
}

/**
 * Writes the budget left until `deadline`, minus the reserve, into each of `headers` of an
 * outbound carrier. A valid value the caller already put there is kept when it is shorter
 * (rewritten in milliseconds), so a client's own timeout is never stretched.
 */
export function injectForeign(
  carrier: unknown,
  getter: Pick<TextMapGetter, 'get'>,
  setter: TextMapSetter,
  headers: readonly ForeignOutboundHeader[],
  deadline: number,
  reserveMs = DEFAULT_RESERVE_MS,
  now = Date.now(),
): void {
  const budget = Math.max(0, Math.floor(deadline - now - reserveMs));
  for (const header of headers) {
    const existing = getter.get(carrier, header);
    const theirs = typeof existing === 'string' ? parse(header, existing.trim()) : undefined;
    const ms = typeof theirs === 'number' && theirs < budget ? theirs : budget;
    setter.set(carrier, header, encodeForeign(header, ms));
  }
}

function encodeForeign(header: ForeignOutboundHeader, ms: number): string {
  switch (header) {
    case GRPC_TIMEOUT_HEADER:
      return encodeGrpcTimeout(ms);
    case CONNECT_TIMEOUT_HEADER:
      return encodeConnectTimeout(ms);
    default:
      throw new TypeError(
        `ctxflow: cannot send deadline header ${JSON.stringify(header)}; known: ${FOREIGN_OUTBOUND_HEADERS.join(', ')}`,
      );
  }
}
