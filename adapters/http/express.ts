/**
 * `ctxflow/express`: the node:http server side (`ctxflow/http`) as express (5 and 4) and connect
 * middleware.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { context as otel } from '@opentelemetry/api';
import {
  answerError,
  type ErrorReporter,
  reportError,
  requestContexts,
  type ServerOptions,
} from './server.ts';

export { type ErrorLoggerOptions, errorLogger } from './error-log.ts';
export { contextOf, type ServerOptions } from './server.ts';

/** Options of the `errorHandler()` middleware. */
export interface ErrorHandlerOptions {
  /**
   * Called with each handler error that is not a context's end (those are expected), unless the
   * request's context had already ended (writing after a 504 is its aftermath, not a new failure).
   * Default: `errorLogger()` to stderr (each distinct error's stack once, then a count of its
   * repeats per minute); nothing when NODE_ENV is `test`.
   */
  onError?: ErrorReporter;
}

/** The `next` function of express (4 or 5) and connect. */
export type Next = (error?: unknown) => void;

/**
 * Middleware giving every request a context: a deadline from the caller's headers (when trusted),
 * this service's `budgetMs` and the `maxInboundMs` cap; cancelled when the client goes away,
 * answered 504 when the deadline passes first, cancelled once the response is complete. Handlers
 * read it with `current()`. Install `errorHandler()` after the routes.
 */
export function deadlines(
  options: ServerOptions = {},
): (req: IncomingMessage, res: ServerResponse, next: Next) => void {
  const accept = requestContexts(options);
  return function ctxflowDeadlines(req, res, next) {
    const otelContext = accept(req, res);
    if (otelContext !== undefined) otel.with(otelContext, next);
  };
}

/**
 * Express error middleware (four arguments) to install after the routes. A context's end
 * (`DeadlineExceededError`, `CancelledError`, e.g. from a downstream call) is answered with its
 * status and `ctx-cancel-reason`; any other error with its `status` (4xx/5xx) or 500, and the
 * request's context is cancelled with cause `error` so the work it started stops.
 */
export function errorHandler(
  options: ErrorHandlerOptions = {},
): (error: unknown, req: IncomingMessage, res: ServerResponse, next: Next) => void {
  const onError = options.onError ?? reportError;
  // biome-ignore lint/correctness/noUnusedFunctionParameters: express tells error middleware by its four parameters
  return function ctxflowErrors(error, req, res, next) {
    answerError(error, req, res, onError);
  };
}
