import type { CauseCode } from '../../sdk/index.ts';
import { adapterInstruments, BUDGET_BUCKETS_MS, metricCause } from '../../sdk/wire.ts';

/** What became of a message not handled as it came (`ctxflow.kafka.outcome`). */
export type MessageOutcome = 'skipped' | 'dead-lettered' | 'expired';

const meter = adapterInstruments((m) => ({
  messages: m.createCounter('ctxflow.kafka.messages', {
    description:
      'Kafka messages dead-lettered, skipped, or handed over expired, instead of handled as they came',
    unit: '{message}',
  }),
  cancelDelay: m.createHistogram('ctxflow.kafka.cancel.delay', {
    description:
      'Time from a cancel published on the cancel bus to a consumer instance reading it, or aborting a handler',
    unit: 'ms',
    advice: { explicitBucketBoundaries: BUDGET_BUCKETS_MS },
  }),
  cancelDropped: m.createCounter('ctxflow.kafka.cancel.dropped', {
    description:
      'Events read off the cancel bus and dropped because their request id or cause was missing or malformed',
    unit: '{event}',
  }),
}));

/**
 * Counts a Kafka message not handled as it came (`ctxflow.kafka.messages`), by topic, outcome and
 * cause: dead-lettered or skipped (expired in the queue, cancelled through the bus, failed past its
 * retries), or `expired`: handed to its handler although its context had ended.
 */
export function countMessage(topic: string, outcome: MessageOutcome, cause: CauseCode): void {
  meter().messages.add(1, {
    'messaging.destination.name': topic,
    'ctxflow.kafka.outcome': outcome,
    'ctxflow.cause': metricCause(cause),
  });
}

/**
 * Records the delay of a cancel through the cancel bus (`ctxflow.kafka.cancel.delay`): from its
 * publication to this instance's reader (`read`, the reader's lag), or to a running handler's
 * abort (`abort`).
 */
export function recordCancelDelay(bus: string, stage: 'read' | 'abort', ms: number): void {
  meter().cancelDelay.record(Math.max(0, ms), {
    'messaging.destination.name': bus,
    'ctxflow.kafka.cancel.stage': stage,
  });
}

/** Counts an event read off the cancel bus and dropped as malformed (`ctxflow.kafka.cancel.dropped`). */
export function countCancelDropped(bus: string): void {
  meter().cancelDropped.add(1, { 'messaging.destination.name': bus });
}
