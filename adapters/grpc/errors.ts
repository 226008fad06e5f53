/** Typed errors for gRPC calls that ended for a context's sake. */

import type * as grpc from '@grpc/grpc-js';
import type { CallInvocationTransformer, CallProperties, Metadata, ServiceError } from '@grpc/grpc-js';
import { type Cause, ContextDoneError } from '../../sdk/index.ts';
import { errorFor } from '../../sdk/wire.ts';
import { fallbackCode, isContextStatus, reasonOf } from './metadata.ts';

/**
 * A typed context error that came back as a gRPC status: the `DeadlineExceededError` or
 * `CancelledError` for the cause, with the status fields of a grpc-js `ServiceError`.
 */
export type GrpcContextError = ContextDoneError & {
  /** The gRPC status code: DEADLINE_EXCEEDED (4) or CANCELLED (1). */
  code: grpc.status;
  details: string;
  /** The trailing metadata, with `ctx-cancel-reason`. */
  metadata: Metadata;
};

function isServiceError(error: unknown): error is ServiceError {
  return error instanceof Error && typeof (error as Partial<ServiceError>).code === 'number';
}

/**
 * The typed error for a grpc-js client error, or undefined when it is not about a context:
 * the local context's own error when it ended the call (`err === ctx.error`), otherwise, for
 * DEADLINE_EXCEEDED and CANCELLED, a `DeadlineExceededError` / `CancelledError` with the cause
 * the server sent in ctx-cancel-reason (`deadline_exceeded` / `cancelled` when it sent none) and
 * the status as `code`, `details`, `metadata`. A `ContextDoneError` is returned as is.
 */
export function toContextError(error: unknown): ContextDoneError | undefined {
  if (error instanceof ContextDoneError) return error;
  if (!isServiceError(error) || !isContextStatus(error.code)) return undefined;
  const attached = (error as { cause?: unknown }).cause;
  const cause = isCause(attached)
    ? attached
    : (reasonOf(error.metadata) ?? { code: fallbackCode(error.code) });
  const typed = errorFor(cause) as GrpcContextError;
  typed.code = error.code;
  typed.details = error.details;
  typed.metadata = error.metadata;
  if (error.stack !== undefined) typed.stack = `${typed.name}: ${typed.message}\n${stackFrames(error.stack)}`;
  return typed;
}

function stackFrames(stack: string): string {
  const start = stack.indexOf('\n    at ');
  return start === -1 ? '' : stack.slice(start + 1);
}

function isCause(value: unknown): value is Cause {
  return typeof value === 'object' && value !== null && typeof (value as Cause).code === 'string';
}

/**
 * A grpc-js `callInvocationTransformer` that gives the callback (unary, client streaming) and the
 * 'error' event (server streaming, bidi) the typed error of `toContextError` instead of the
 * plain `ServiceError` when a call ends for a context's sake.
 */
export const typedErrors: CallInvocationTransformer = (properties) => {
  const callback = properties.callback;
  if (callback !== undefined) {
    properties.callback = (error, value) => {
      if (error == null) callback(error, value);
      else callback((toContextError(error) as ServiceError | undefined) ?? error, value);
    };
  } else {
    const call = properties.call as CallProperties<unknown, unknown>['call'] & { emit: Emit };
    const emit = call.emit;
    call.emit = function (this: unknown, event: string | symbol, ...args: unknown[]): boolean {
      if (event === 'error') args[0] = toContextError(args[0]) ?? args[0];
      return emit.call(this, event, ...args);
    };
  }
  return properties;
};
type Emit = (event: string | symbol, ...args: unknown[]) => boolean;
