export { Breaker, type BreakerOptions, type BreakerState, breaker } from './breaker.ts';
export { RetryBudget, type RetryBudgetOptions } from './budget.ts';
export { Bulkhead, type BulkheadOptions, bulkhead } from './bulkhead.ts';
export {
  BulkheadFullError,
  CircuitOpenError,
  InsufficientBudgetError,
  ResilienceError,
  ShuttingDownError,
} from './errors.ts';
export { type FaultHookOptions, type FaultKind, installFaultHooks } from './faults.ts';
export { Hedge, type HedgeOptions, hedge } from './hedge.ts';
export { LatencyWindow } from './latency.ts';
export { OutlivedDetector, type OutlivedOptions, type OutlivedReport, outlived } from './outlived.ts';
export { type Clock, type Policy, type Random, wrap } from './policy.ts';
export { isRetryable, Retry, type RetryOptions, retry } from './retry.ts';
export { Shed, type ShedOptions, shed } from './shed.ts';
export { type Admission, Shutdown, type ShutdownOptions, type ShutdownState, shutdown } from './shutdown.ts';
