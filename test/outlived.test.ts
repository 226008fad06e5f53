import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { DiagLogLevel, diag, metrics } from '@opentelemetry/api';
import { MeterProvider, MetricReader } from '@opentelemetry/sdk-metrics';
import express from 'express';
import { deadlines, errorHandler } from '../adapters/http/express.ts';
import { fetch } from '../adapters/http/fetch.ts';
import { background, type Context, current } from '../sdk/context.ts';
import { DeadlineExceededError } from '../sdk/errors.ts';
import { type OutlivedReport, outlived } from '../sdk/resilience/index.ts';
import { type Listening, listen } from './support/http.ts';

class Reader extends MetricReader {
  protected override async onForceFlush(): Promise<void> {}
  protected override async onShutdown(): Promise<void> {}
}

const TRACE_ID = '4bf92f3577b34da6a3ce929d0e0e4736';
const TRACEPARENT = `00-${TRACE_ID}-00f067aa0ba902b7-01`;

function sleepIgnoring(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function sleepHonouring(ctx: Context, ms: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    ctx.signal.addEventListener('abort', () => {
      clearTimeout(timer);
      reject(ctx.signal.reason);
    });
  });
}

describe('outlived-work detector', () => {
  const reader = new Reader();
  const warnings: string[] = [];
  const reports: OutlivedReport[] = [];
  const finished: string[] = [];
  let server: Listening;

  before(async () => {
    metrics.setGlobalMeterProvider(new MeterProvider({ readers: [reader] }));
    diag.setLogger(
      {
        warn: (message: string) => warnings.push(message),
        error: () => {},
        info: () => {},
        debug: () => {},
        verbose: () => {},
      },
      DiagLogLevel.WARN,
    );
    const detector = outlived({ name: 'orders', afterMs: 100, onReport: (report) => reports.push(report) });
    const app = express();
    app.use(deadlines({ budgetMs: 50 }));
    app.get(
      '/ignores',
      detector.bind(async () => {
        await sleepIgnoring(400);
        finished.push('ignores');
      }),
    );
    app.get(
      '/honours',
      detector.bind(async () => {
        try {
          await sleepHonouring(current(), 400);
        } finally {
          finished.push('honours');
        }
      }),
    );
    app.use(errorHandler());
    server = await listen(app);
  });

  after(async () => {
    await server.close();
    diag.disable();
    metrics.disable();
  });

  test('fires for a handler that ignores its signal, naming the trace and the cause; quiet for one that honours it', async () => {
    const headers = { traceparent: TRACEPARENT };
    const answers = await Promise.allSettled([
      fetch(`${server.url}/ignores`, { headers, ctx: background() }),
      fetch(`${server.url}/honours`, { headers, ctx: background() }),
    ]);
    for (const answer of answers) {
      assert.ok(
        answer.status === 'rejected' && answer.reason instanceof DeadlineExceededError,
        'answered 504',
      );
    }
    while (finished.length < 2) await sleepIgnoring(20);

    assert.equal(reports.length, 1, JSON.stringify(reports));
    const report = reports[0] as OutlivedReport;
    assert.equal(report.name, 'orders');
    assert.equal(report.traceId, TRACE_ID);
    assert.equal(report.cause.code, 'deadline_exceeded');
    assert.ok(report.overMs >= 99, `reported ${report.overMs} ms after the end`);
    assert.equal(warnings.length, 1);
    assert.match(
      warnings[0] as string,
      new RegExp(
        `orders still running \\d+ ms after its context ended \\(deadline_exceeded\\), trace ${TRACE_ID}`,
      ),
    );

    const { resourceMetrics } = await reader.collect();
    const points = resourceMetrics.scopeMetrics
      .flatMap((scope) => scope.metrics)
      .filter((metric) => metric.descriptor.name === 'ctxflow.outlived')
      .flatMap((metric) => metric.dataPoints as { attributes: object; value: unknown }[]);
    assert.deepEqual(
      points.map((point) => [point.attributes, point.value]),
      [[{ name: 'orders', cause: 'deadline_exceeded' }, 1]],
    );
  });
});
