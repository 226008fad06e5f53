import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { DiagLogLevel, diag, metrics, context as otel, trace } from '@opentelemetry/api';
import { MeterProvider, MetricReader } from '@opentelemetry/sdk-metrics';
import { InMemorySpanExporter, SimpleSpanProcessor, TracerProvider } from '@opentelemetry/sdk-trace';
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
  const spans = new InMemorySpanExporter();
  const warnings: string[] = [];
  const reports: OutlivedReport[] = [];
  const finished: string[] = [];
  let server: Listening;

  before(async () => {
    metrics.setGlobalMeterProvider(new MeterProvider({ readers: [reader] }));
    trace.setGlobalTracerProvider(
      new TracerProvider({ spanProcessors: [new SimpleSpanProcessor({ exporter: spans })] }),
    );
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
    // A server span per request, ended with the answer, as instrumentation-http makes.
    app.use((req, res, next) => {
      const span = trace.getTracer('test').startSpan(`GET ${req.path}`);
      res.once('finish', () => span.end());
      otel.with(trace.setSpan(otel.active(), span), next);
    });
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
    trace.disable();
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

    // The request's span had ended with its 504: the event is on a zero-length child in the same trace.
    const exported = spans.getFinishedSpans();
    const request = exported.find((span) => span.name === 'GET /ignores');
    const event = exported.filter((span) => span.name === 'ctxflow.outlived');
    assert.equal(event.length, 1);
    assert.equal(event[0]?.spanContext().traceId, TRACE_ID);
    assert.equal(event[0]?.parentSpanContext?.spanId, request?.spanContext().spanId);
    assert.equal(event[0]?.events[0]?.attributes?.['ctxflow.cause'], 'deadline_exceeded');

    const { resourceMetrics } = await reader.collect();
    const points = resourceMetrics.scopeMetrics
      .flatMap((scope) => scope.metrics)
      .filter((metric) => metric.descriptor.name === 'ctxflow.outlived')
      .flatMap((metric) => metric.dataPoints as { attributes: object; value: unknown }[]);
    assert.deepEqual(
      points.map((point) => [point.attributes, point.value]),
      [[{ 'ctxflow.work': 'orders', 'ctxflow.cause': 'deadline_exceeded' }, 1]],
    );
  });
});
