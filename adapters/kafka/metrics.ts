import { type Counter, type MeterProvider, metrics } from '@opentelemetry/api';

let provider: MeterProvider | undefined;
let messages: Counter | undefined;

/**
 * Counts a message the consumer did not hand to its handler as it came (skipped or dead-lettered),
 * as the OpenTelemetry counter `ctxflow.kafka.messages` with `topic`, `outcome` and `reason`.
 */
export function countMessage(topic: string, outcome: 'skipped' | 'dead-lettered', reason: string): void {
  const global = metrics.getMeterProvider();
  if (global !== provider || messages === undefined) {
    provider = global;
    messages = global.getMeter('ctxflow').createCounter('ctxflow.kafka.messages', {
      description: 'Kafka messages skipped or dead-lettered instead of handled',
    });
  }
  messages.add(1, { topic, outcome, reason });
}
