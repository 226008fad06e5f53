/**
 * ctxflow: a request's deadline, cancellation and trace, carried across every hop.
 * This entry point is what applications use; adapter authors find the wire side in `ctxflow/wire`.
 */
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
export {
  CancelledError,
  ContextDoneError,
  DeadlineExceededError,
  isContextDoneError,
} from './errors.ts';
export { type LogFields, logFields } from './log.ts';
export { DeadlinePropagator } from './propagation.ts';
export { getContext, setContext } from './scope.ts';
