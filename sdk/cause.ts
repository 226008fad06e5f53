/**
 * Why a context ended. The standard codes cover what ctxflow itself decides;
 * anything else is a user-given reason in the same token charset.
 */
export type CauseCode =
  | 'deadline_exceeded'
  | 'cancelled'
  | 'client_disconnected'
  | 'upstream_cancelled'
  | 'shutdown'
  | 'error'
  | (string & {});

/** A small typed reason: a token code and an optional short message. */
export interface Cause {
  readonly code: CauseCode;
  readonly message?: string;
}

/** What `cancel()` accepts: a code, or a code with a message. */
export type CauseInput = CauseCode | Cause;

/** Longest code accepted, on the wire and from callers. */
export const MAX_CODE_LENGTH = 64;
/** Longest message kept; longer ones are cut. */
export const MAX_MESSAGE_LENGTH = 128;

const CODE = /^[a-z][a-z0-9_.-]*$/;
// Messages may reach other services and logs: printable ASCII only, no quotes or angle brackets.
const UNSAFE_MESSAGE_CHARS = /[^A-Za-z0-9 _.,:;/()=+#@%-]/g;

/** True when `code` may be used as a cause code. */
export function isCauseCode(code: string): boolean {
  return code.length > 0 && code.length <= MAX_CODE_LENGTH && CODE.test(code);
}

/** Makes a message safe to send: unsafe characters become `_`, long ones are cut. */
export function sanitizeMessage(message: string): string {
  return message.slice(0, MAX_MESSAGE_LENGTH).replace(UNSAFE_MESSAGE_CHARS, '_');
}

/** Normalizes what a caller passed to `cancel()`; throws a TypeError on a code outside the charset. */
export function toCause(input: CauseInput): Cause {
  const cause = typeof input === 'string' ? { code: input } : input;
  if (typeof cause.code !== 'string' || !isCauseCode(cause.code)) {
    throw new TypeError(
      `ctxflow: invalid cause code ${JSON.stringify(cause.code)}: use 1-${MAX_CODE_LENGTH} of [a-z0-9_.-], starting with a letter`,
    );
  }
  if (cause.message === undefined) return { code: cause.code };
  return { code: cause.code, message: sanitizeMessage(String(cause.message)) };
}
