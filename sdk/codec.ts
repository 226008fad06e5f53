import {
  type Cause,
  type CauseCode,
  isCauseCode,
  MAX_CODE_LENGTH,
  MAX_MESSAGE_LENGTH,
  sanitizeMessage,
} from './cause.ts';
import { type ContextDoneError, errorFor } from './errors.ts';
import { countRejected } from './metrics.ts';

/** Remaining budget in integer milliseconds at send time, minus the sender's reserve. */
export const TIMEOUT_HEADER = 'ctx-timeout';
/** Absolute deadline in epoch milliseconds, minus the sender's reserve. */
export const DEADLINE_HEADER = 'ctx-deadline';
/** An opaque id of the context a message was sent under, so a later cancellation can name it. */
export const REQUEST_ID_HEADER = 'ctx-request-id';
/** Why a context ended: a cause code, then optionally one space and a short message. */
export const CANCEL_REASON_HEADER = 'ctx-cancel-reason';

/** How budgets are read from inbound headers; every field has a default. */
export interface DecodeOptions {
  /** The largest inbound budget accepted; longer ones are cut to it. Default 60 000. */
  maxInboundMs?: number;
  /**
   * Which header wins when both arrive: `timeout` for synchronous hops (immune to clock skew),
   * `deadline` for queues (time spent waiting counts). Default `timeout`.
   */
  prefer?: 'timeout' | 'deadline';
  /**
   * With `prefer: 'deadline'`: how much later than `ctx-deadline` the receiver's clock may run
   * before the message counts as expired (receiver clocks ahead of the sender's). The grant stays
   * capped at `ctx-timeout`, what the sender had left when it sent. Default 0.
   */
  skewAllowanceMs?: number;
  /** Do not read `ctx-deadline` at all: only `ctx-timeout` (queue time then goes uncounted). */
  ignoreInboundDeadline?: boolean;
}

/** How budgets are written into outbound headers; every field has a default. */
export interface EncodeOptions {
  /** Milliseconds subtracted from the budget when sending, so the receiver gives up first. Default 5. */
  reserveMs?: number;
  /**
   * Also send `ctx-deadline` (absolute). Synchronous hops need only `ctx-timeout`, so the HTTP
   * and gRPC adapters leave it out unless this is true; the propagator always sends it.
   */
  sendDeadline?: boolean;
}

/** Both sides' options, for what reads and writes (the propagator). */
export interface WireOptions extends DecodeOptions, EncodeOptions {}

export const DEFAULT_RESERVE_MS = 5;
export const DEFAULT_MAX_INBOUND_MS = 60_000;
/** At most 8 digits, as grpc-timeout: about 27 hours. */
const MAX_TIMEOUT_DIGITS = 8;
/** Epoch milliseconds have 13 digits from 2001 to 2286. */
const DEADLINE_DIGITS = 13;
const DIGITS = /^[0-9]+$/;
const MAX_REASON_LENGTH = MAX_CODE_LENGTH + 1 + MAX_MESSAGE_LENGTH;
const REASON = /^([a-z][a-z0-9_.-]*)(?: ([A-Za-z0-9 _.,:;/()=+#@%-]+))?$/;

/** A header value as transports hand it over: absent, one value, or repeated values. */
export type HeaderValue = string | readonly string[] | undefined;

/** The one value of a header, or undefined (counted) when it is repeated. */
export function single(header: string, value: HeaderValue): string | undefined {
  if (value === undefined || typeof value === 'string') return value;
  if (value.length === 0) return undefined;
  if (value.length > 1) {
    countRejected(header, 'duplicate');
    return undefined;
  }
  return value[0];
}

function digits(
  header: string,
  value: HeaderValue,
  minLength: number,
  maxLength: number,
): number | undefined {
  const raw = single(header, value);
  if (raw === undefined) return undefined;
  // HTTP allows optional whitespace around a value; parsers usually strip it, not always.
  const text = raw.trim();
  if (!DIGITS.test(text) || text.length < minLength) {
    countRejected(header, 'malformed');
    return undefined;
  }
  if (text.length > maxLength) {
    countRejected(header, 'too_large');
    return undefined;
  }
  return Number(text);
}

/** Encodes a remaining budget for `ctx-timeout`: whole milliseconds minus the reserve, never negative. */
export function encodeTimeout(remainingMs: number, reserveMs = DEFAULT_RESERVE_MS): string {
  return String(Math.max(0, Math.floor(remainingMs - reserveMs)));
}

/** Encodes an absolute deadline for `ctx-deadline`: whole epoch milliseconds minus the reserve. */
export function encodeDeadline(deadline: number, reserveMs = DEFAULT_RESERVE_MS): string {
  return String(Math.floor(deadline - reserveMs));
}

/** Decodes `ctx-timeout`; a malformed, repeated or over-long value gives undefined and is counted. */
export function decodeTimeout(value: HeaderValue): number | undefined {
  return digits(TIMEOUT_HEADER, value, 1, MAX_TIMEOUT_DIGITS);
}

/** Decodes `ctx-deadline`; a malformed, repeated or out-of-range value gives undefined and is counted. */
export function decodeDeadline(value: HeaderValue): number | undefined {
  return digits(DEADLINE_HEADER, value, DEADLINE_DIGITS, DEADLINE_DIGITS);
}

/**
 * The deadline (epoch ms) that inbound headers grant, or undefined when they grant none.
 * Budgets over `maxInboundMs` are cut to it and counted.
 */
export function inboundDeadline(
  timeout: HeaderValue,
  deadline: HeaderValue,
  options: DecodeOptions = {},
  now = Date.now(),
): number | undefined {
  if (timeout === undefined && deadline === undefined) return undefined;
  const max = options.maxInboundMs ?? DEFAULT_MAX_INBOUND_MS;
  if (options.prefer !== 'deadline') {
    return fromTimeout(timeout, now, max) ?? fromDeadline(deadline, options, now, max);
  }
  // The absolute deadline counts queue time but trusts the sender's clock; the relative budget
  // is immune to skew but misses queue time. Take the absolute one, widened by the allowed skew,
  // and never beyond what the sender had left when it sent.
  const absolute = fromDeadline(deadline, options, now, max);
  const relative = fromTimeout(timeout, now, max);
  if (absolute === undefined) return relative;
  const widened = absolute + Math.max(0, options.skewAllowanceMs ?? 0);
  return relative === undefined ? Math.min(widened, now + max) : Math.min(widened, relative);
}

/** The deadline `ctx-timeout` grants, capped at `max`. */
function fromTimeout(timeout: HeaderValue, now: number, max: number): number | undefined {
  const ms = decodeTimeout(timeout);
  return ms === undefined ? undefined : now + clamp(TIMEOUT_HEADER, ms, max);
}

/** The deadline `ctx-deadline` grants, capped at `max`; undefined when the options ignore it. */
function fromDeadline(
  deadline: HeaderValue,
  options: DecodeOptions,
  now: number,
  max: number,
): number | undefined {
  if (options.ignoreInboundDeadline) return undefined;
  const at = decodeDeadline(deadline);
  return at === undefined ? undefined : now + clamp(DEADLINE_HEADER, at - now, max);
}

const REQUEST_ID = /^[A-Za-z0-9_-]{1,64}$/;

/** Decodes `ctx-request-id`: 1 to 64 of `[A-Za-z0-9_-]`; anything else gives undefined and is counted. */
export function decodeRequestId(value: HeaderValue): string | undefined {
  const raw = single(REQUEST_ID_HEADER, value);
  if (raw === undefined) return undefined;
  const text = raw.trim();
  if (REQUEST_ID.test(text)) return text;
  countRejected(REQUEST_ID_HEADER, text.length > 64 ? 'too_large' : 'malformed');
  return undefined;
}

function clamp(header: string, ms: number, max: number): number {
  if (ms <= max) return ms;
  countRejected(header, 'clamped');
  return max;
}

/** Encodes a cause for `ctx-cancel-reason`; the message is sanitized and cut. */
export function encodeCause(cause: Cause): string {
  const message = cause.message === undefined ? '' : sanitizeMessage(cause.message).trim();
  return message === '' ? cause.code : `${cause.code} ${message}`;
}

/** Decodes `ctx-cancel-reason`; anything outside the charset or over the caps gives undefined and is counted. */
export function decodeCause(value: HeaderValue): Cause | undefined {
  const raw = single(CANCEL_REASON_HEADER, value);
  if (raw === undefined) return undefined;
  const text = raw.length > MAX_REASON_LENGTH ? undefined : raw.trim();
  const match = text === undefined ? null : REASON.exec(text);
  const code = match?.[1];
  if (
    match === null ||
    code === undefined ||
    !isCauseCode(code) ||
    (match[2]?.length ?? 0) > MAX_MESSAGE_LENGTH
  ) {
    countRejected(CANCEL_REASON_HEADER, text === undefined ? 'too_large' : 'malformed');
    return undefined;
  }
  const message = match[2];
  return message === undefined ? { code } : { code, message };
}

/**
 * The typed error for a response saying the callee's context ended: the cause it sent in
 * `ctx-cancel-reason` when valid, `fallback` otherwise.
 */
export function remoteError(reason: HeaderValue, fallback: CauseCode): ContextDoneError {
  return errorFor(decodeCause(reason) ?? { code: fallback });
}
