/**
 * `ctxflow/http`: node:http and node:https. Client: `request`/`get` under a context. Server:
 * `withDeadlines(handler)` for `http.createServer`, the base of `ctxflow/express`.
 */
export { type ContextRequestOptions, get, request, responseError } from './client.ts';
export { type ErrorLoggerOptions, errorLogger } from './error-log.ts';
export {
  contextOf,
  type ErrorReporter,
  type HandlerOptions,
  type RequestHandler,
  type ServerOptions,
  withDeadlines,
} from './server.ts';
