import { type Counter, type MeterProvider, metrics } from '@opentelemetry/api';

/** Why an inbound value was not taken as sent. */
export type RejectReason = 'malformed' | 'duplicate' | 'too_large' | 'clamped';

let provider: MeterProvider | undefined;
let rejected: Counter | undefined;

/**
 * Counts an inbound header value that was ignored (or clamped), as the OpenTelemetry
 * counter `ctxflow.inbound.rejected`. A no-op until a MeterProvider is registered.
 */
export function countRejected(header: string, reason: RejectReason): void {
  const global = metrics.getMeterProvider();
  if (global !== provider || rejected === undefined) {
    provider = global;
    rejected = global.getMeter('ctxflow').createCounter('ctxflow.inbound.rejected', {
      description: 'Inbound ctxflow header values ignored or clamped',
    });
  }
  rejected.add(1, { header, reason });
}
