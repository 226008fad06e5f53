/** An in-process MeterProvider for unit tests: registers it globally and reads its data points. */
import { after } from 'node:test';
import { type Attributes, metrics } from '@opentelemetry/api';
import { MeterProvider, MetricReader } from '@opentelemetry/sdk-metrics';

class Reader extends MetricReader {
  protected override async onForceFlush(): Promise<void> {}
  protected override async onShutdown(): Promise<void> {}
}

/** One data point: its attributes and its value (a sum, or a histogram's count). */
export interface Point {
  attributes: Attributes;
  value: number;
}

/**
 * Registers a global MeterProvider for the calling test file (removed after it) and returns a
 * function reading the current data points of an instrument.
 */
export function collectMetrics(): (name: string) => Promise<Point[]> {
  const reader = new Reader();
  metrics.setGlobalMeterProvider(new MeterProvider({ readers: [reader] }));
  after(() => metrics.disable());
  return async (name) => {
    const { resourceMetrics } = await reader.collect();
    return resourceMetrics.scopeMetrics.flatMap((scope) =>
      scope.metrics
        .filter((m) => m.descriptor.name === name)
        .flatMap((m) =>
          m.dataPoints.map((p) => ({
            attributes: p.attributes,
            value: typeof p.value === 'number' ? p.value : (p.value as { count: number }).count,
          })),
        ),
    );
  };
}

/** The counts of `ctxflow.inbound.rejected`, keyed `header/reason`. */
export async function rejectedCounts(
  points: (name: string) => Promise<Point[]>,
): Promise<Record<string, number>> {
  const counts: Record<string, number> = {};
  for (const point of await points('ctxflow.inbound.rejected')) {
    counts[`${point.attributes.header}/${point.attributes.reason}`] = point.value;
  }
  return counts;
}
