import {
  type Attributes,
  type Counter,
  type Histogram,
  type Meter,
  type MeterProvider,
  metrics,
} from '@opentelemetry/api';
import type { CauseCode } from './cause.ts';

/** Why an inbound value was not taken as sent. */
export type RejectReason = 'malformed' | 'duplicate' | 'too_large' | 'clamped';

/**
 * A transport as its adapter names it in metrics: `ctxflow.transport`, and the semantic-convention
 * attribute naming one of its operations (`http.route`, `rpc.method`, `messaging.destination.name`).
 */
export interface Transport {
  readonly name: string;
  readonly operationKey: string;
  /**
   * Every caller of this transport is a service (an RPC client), so a trusted one going away is
   * `upstream_cancelled` even when it sent no deadline; otherwise only a caller that sent ctxflow's
   * deadline headers is (docs/design.md, "The inbound lifecycle").
   */
  readonly callersAreServices?: boolean;
}

/**
 * Bucket boundaries of the budget-on-arrival histogram, in milliseconds: fine at the low end,
 * where a hop that runs out of time shows, and up to the 60 s inbound cap.
 */
export const BUDGET_BUCKETS_MS = [
  0, 1, 2, 5, 10, 15, 20, 30, 40, 50, 75, 100, 150, 200, 300, 500, 750, 1_000, 2_000, 5_000, 10_000, 30_000,
  60_000,
];

/** Cause codes counted as they are; any other (a user's or a caller's own token) is counted as `other`. */
const STANDARD_CAUSES: ReadonlySet<string> = new Set([
  'deadline_exceeded',
  'cancelled',
  'client_disconnected',
  'upstream_cancelled',
  'shutdown',
  'error',
  'rebalance',
]);

interface Instruments {
  readonly rejected: Counter;
  readonly budget: Histogram;
  readonly ended: Counter;
  readonly shed: Counter;
  readonly outlived: Counter;
  readonly retries: Counter;
  readonly breaker: Counter;
  readonly bulkheadWait: Histogram;
}

let provider: MeterProvider | undefined;
let instruments: Instruments | undefined;

/**
 * Instruments an adapter declares for its own transport, made by `make` once per registered
 * MeterProvider (no-ops until one is registered, as the core's are). Returns what gives them.
 */
export function adapterInstruments<T>(make: (meter: Meter) => T): () => T {
  let madeFor: MeterProvider | undefined;
  let made: T | undefined;
  return () => {
    const global = metrics.getMeterProvider();
    if (global !== madeFor || made === undefined) {
      madeFor = global;
      made = make(global.getMeter('ctxflow'));
    }
    return made;
  };
}

/** A cause code as metrics count it: the standard ones as they are, any other (a caller's own token) as `other`. */
export function metricCause(cause: CauseCode): string {
  return STANDARD_CAUSES.has(cause) ? cause : 'other';
}

/** The instruments of the registered MeterProvider (no-ops until one is registered), made once per provider. */
function meter(): Instruments {
  const global = metrics.getMeterProvider();
  if (global === provider && instruments !== undefined) return instruments;
  provider = global;
  const m = global.getMeter('ctxflow');
  instruments = {
    rejected: m.createCounter('ctxflow.inbound.rejected', {
      description: 'Inbound deadline and cause header values ignored or clamped',
      unit: '{value}',
    }),
    budget: m.createHistogram('ctxflow.budget.arrival', {
      description: 'Budget left when a request or message arrived at a hop',
      unit: 'ms',
      advice: { explicitBucketBoundaries: BUDGET_BUCKETS_MS },
    }),
    ended: m.createCounter('ctxflow.context.ended', {
      description: 'Requests and messages whose context ended before their work did, by cause',
      unit: '{context}',
    }),
    shed: m.createCounter('ctxflow.request.shed', {
      description: 'Requests refused on arrival because their budget was below the minimum',
      unit: '{request}',
    }),
    outlived: m.createCounter('ctxflow.outlived', {
      description: 'Work still running a while after its context ended',
      unit: '{work}',
    }),
    retries: m.createCounter('ctxflow.retry.decisions', {
      description: 'What a retry policy decided after a failed attempt',
      unit: '{decision}',
    }),
    breaker: m.createCounter('ctxflow.breaker.transitions', {
      description: 'Circuit breaker state changes',
      unit: '{transition}',
    }),
    bulkheadWait: m.createHistogram('ctxflow.bulkhead.wait', {
      description: 'Time a call waited in a bulkhead queue',
      unit: 'ms',
      advice: { explicitBucketBoundaries: BUDGET_BUCKETS_MS },
    }),
  };
  return instruments;
}

/**
 * Counts an inbound header value that was ignored (or clamped), as the OpenTelemetry
 * counter `ctxflow.inbound.rejected`. A no-op until a MeterProvider is registered.
 */
export function countRejected(header: string, reason: RejectReason): void {
  meter().rejected.add(1, { header, reason });
}

/**
 * The attributes of a hop: its transport and, when known, its operation under the transport's
 * semantic-convention name (`http.route`, a route template; `rpc.method`, a registered method;
 * `messaging.destination.name`, a topic). Never a raw URL or anything else a client chooses.
 */
export function hopAttributes(transport: Transport, operation?: string): Attributes {
  // Looked up per request: two map lookups, no key built (a string per request otherwise).
  let byOperation = attributeSets.get(transport.name);
  if (byOperation === undefined) {
    byOperation = new Map();
    attributeSets.set(transport.name, byOperation);
  }
  let attributes = byOperation.get(operation);
  if (attributes !== undefined) return attributes;
  attributes = Object.freeze(
    operation === undefined
      ? { 'ctxflow.transport': transport.name }
      : { 'ctxflow.transport': transport.name, [transport.operationKey]: operation },
  );
  // Operations are routes, methods and topics the service declared: few. The cap only bounds memory.
  if (byOperation.size < MAX_ATTRIBUTE_SETS) byOperation.set(operation, attributes);
  return attributes;
}

const MAX_ATTRIBUTE_SETS = 1_000;
/** Attribute sets by transport name, then by operation (undefined: none). */
const attributeSets = new Map<string, Map<string | undefined, Attributes>>();

/** Records the budget a request or message arrived with (`ctxflow.budget.arrival`); nothing when it had no deadline. */
export function recordArrival(attributes: Attributes, budgetMs: number | undefined): void {
  if (budgetMs !== undefined && Number.isFinite(budgetMs)) meter().budget.record(budgetMs, attributes);
}

/**
 * Where the end of a context came from: `local` when this hop decided it (its deadline, its
 * caller gone, its handler failing), `downstream` when the handler passed on a callee's end
 * (a rethrown `DeadlineExceededError`): so the hop that ran out of time is the one counting
 * `deadline_exceeded` as `local`.
 */
export type CauseSource = 'local' | 'downstream';

/** Counts a context that ended before its request's work did (`ctxflow.context.ended`), by cause. */
export function countEnded(attributes: Attributes, cause: CauseCode, source: CauseSource = 'local'): void {
  const code = metricCause(cause);
  meter().ended.add(1, { ...attributes, 'ctxflow.cause': code, 'ctxflow.cause.source': source });
}

/** Counts a request refused on arrival for want of budget (`ctxflow.request.shed`). */
export function countShed(attributes: Attributes): void {
  meter().shed.add(1, attributes);
}

/** Counts work still running a while after its context ended (`ctxflow.outlived`), by the detector's name and the cause. */
export function countOutlived(name: string, cause: CauseCode): void {
  const code = metricCause(cause);
  meter().outlived.add(1, { 'ctxflow.work': name, 'ctxflow.cause': code });
}

/**
 * What a retry policy decided after a failed attempt (`ctxflow.retry.decisions`): `retried`, or why
 * not: `caller_ended`, `not_retryable`, `attempts`, `deadline` (no time for another), `budget` (the
 * dependency's retry budget is spent).
 */
export type RetryDecision = 'retried' | 'caller_ended' | 'not_retryable' | 'attempts' | 'deadline' | 'budget';

/** Counts a retry policy's decision, by policy name. */
export function countRetry(policy: string, decision: RetryDecision): void {
  meter().retries.add(1, { 'ctxflow.policy': policy, 'ctxflow.retry.decision': decision });
}

/** Counts a circuit breaker entering `state` (`ctxflow.breaker.transitions`). */
export function countBreakerTransition(policy: string, state: 'open' | 'half-open' | 'closed'): void {
  meter().breaker.add(1, { 'ctxflow.policy': policy, 'ctxflow.breaker.state': state });
}

/** Records how long a call waited in a bulkhead queue, and whether it got a slot or left (`ctxflow.bulkhead.wait`). */
export function recordBulkheadWait(policy: string, waitedMs: number, outcome: 'admitted' | 'left'): void {
  meter().bulkheadWait.record(waitedMs, { 'ctxflow.policy': policy, 'ctxflow.bulkhead.outcome': outcome });
}
