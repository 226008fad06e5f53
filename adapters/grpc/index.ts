/**
 * `ctxflow/grpc`, for @grpc/grpc-js (>= 1.10.4): a client interceptor that sends the context's budget
 * as the call's deadline (grpc-timeout) and as ctx-* metadata and cancels the call with the context,
 * and a server interceptor that builds each call's context from grpc-timeout and ctx-* metadata,
 * runs the handler in it and ends it with the call.
 */
export {
  type ClientInterceptorOptions,
  clientInterceptor,
  clientOptions,
  contextTransformer,
} from './client.ts';
export { type GrpcContextError, toContextError, typedErrors } from './errors.ts';
export { grpcStatusFor } from './metadata.ts';
export { createServer, DEFAULT_RESET_GUARD, type ResetGuard, resetGuard } from './reset-guard.ts';
export { contextOf, type ServerInterceptorOptions, serverInterceptor } from './server.ts';
export { type ContextHandler, type ContextService, type WrapServiceOptions, wrapService } from './service.ts';
