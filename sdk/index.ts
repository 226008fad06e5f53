export type { Cause, CauseCode, CauseInput } from './cause.ts';
export {
  background,
  type CancelableContext,
  type Context,
  current,
  run,
  withCancel,
  withDeadline,
  withoutCancel,
  withTimeout,
} from './context.ts';
export { CancelledError, ContextDoneError, DeadlineExceededError } from './errors.ts';
export { acceptInbound, type InboundCall, type InboundOptions } from './inbound.ts';
export { DeadlinePropagator, extractContext, type Inbound, injectContext } from './propagation.ts';
export { CONTEXT_KEY } from './scope.ts';
export {
  CANCEL_REASON_HEADER,
  DEADLINE_HEADER,
  decodeCause,
  decodeDeadline,
  decodeTimeout,
  encodeCause,
  encodeDeadline,
  encodeTimeout,
  type HeaderValue,
  inboundDeadline,
  remoteError,
  TIMEOUT_HEADER,
  type WireOptions,
} from './wire.ts';
