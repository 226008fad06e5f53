import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  defaultTextMapGetter,
  defaultTextMapSetter,
  ROOT_CONTEXT,
  type SpanContext,
  TraceFlags,
  trace,
} from '@opentelemetry/api';
import { suppressTracing, TraceState, W3CTraceContextPropagator } from '@opentelemetry/core';
import { formatTraceparent, parseTraceparent, TraceContextPropagator } from './traceparent.ts';

const TRACE_ID = '0af7651916cd43dd8448eb211c80319c';
const SPAN_ID = 'b7ad6b7169203331';
const VALID = `00-${TRACE_ID}-${SPAN_ID}-01`;

const otelW3c = new W3CTraceContextPropagator();
const ours = new TraceContextPropagator();

function extracted(propagator: typeof ours | typeof otelW3c, carrier: Record<string, unknown>) {
  const spanContext = trace.getSpanContext(propagator.extract(ROOT_CONTEXT, carrier, defaultTextMapGetter));
  return spanContext === undefined
    ? undefined
    : { ...spanContext, traceState: spanContext.traceState?.serialize() };
}

describe('TraceContextPropagator', () => {
  it('reads every traceparent as OpenTelemetry W3CTraceContextPropagator does', () => {
    const headers: unknown[] = [
      VALID,
      `00-${TRACE_ID}-${SPAN_ID}-00`,
      `00-${TRACE_ID}-${SPAN_ID}-ff`,
      ` ${VALID}`,
      `${VALID} `,
      `\t${VALID}\t`,
      `\u00a0${VALID}\u3000`,
      `\u2000${VALID}`,
      `\ufeff${VALID}\u2029`,
      `\u2000\u2000${VALID}`,
      `  ${VALID}`,
      `${VALID}  `,
      `${VALID}-`,
      `${VALID}-extra`,
      `01-${TRACE_ID}-${SPAN_ID}-01-extra`,
      `01-${TRACE_ID}-${SPAN_ID}-01`,
      `01-${TRACE_ID}-${SPAN_ID}-01x`,
      `01-${TRACE_ID}-${SPAN_ID}-01 `,
      `fe-${TRACE_ID}-${SPAN_ID}-01`,
      `ff-${TRACE_ID}-${SPAN_ID}-01`,
      `0g-${TRACE_ID}-${SPAN_ID}-01`,
      `00-${TRACE_ID.toUpperCase()}-${SPAN_ID}-01`,
      `00-${TRACE_ID}-${SPAN_ID.toUpperCase()}-01`,
      `00-${'0'.repeat(32)}-${SPAN_ID}-01`,
      `00-${TRACE_ID}-${'0'.repeat(16)}-01`,
      `00-${TRACE_ID.slice(1)}-${SPAN_ID}-01`,
      `00-${TRACE_ID}-${SPAN_ID}-1`,
      `00-${TRACE_ID}-${SPAN_ID}-0x`,
      `00_${TRACE_ID}-${SPAN_ID}-01`,
      `00-${TRACE_ID}_${SPAN_ID}-01`,
      `00-${TRACE_ID}-${SPAN_ID}_01`,
      '',
      ' ',
      'garbage',
      [VALID, `00-${'1'.repeat(32)}-${SPAN_ID}-01`],
      [],
      42,
    ];
    for (const header of headers) {
      const carrier = { traceparent: header, tracestate: 'congo=t61rcWkgMzE,rojo=00f067aa0ba902b7' };
      assert.deepEqual(extracted(ours, carrier), extracted(otelW3c, carrier), JSON.stringify(header));
    }
  });

  it('reads tracestate as OpenTelemetry does: absent, empty, one value or several', () => {
    for (const tracestate of [undefined, '', 'a=1', 'a=1,b=2', ['a=1', 'b=2'], 'not a state']) {
      const carrier = { traceparent: VALID, tracestate };
      assert.deepEqual(extracted(ours, carrier), extracted(otelW3c, carrier), JSON.stringify(tracestate));
    }
  });

  it('writes what OpenTelemetry writes, and nothing for an invalid or suppressed span context', () => {
    const spanContexts: SpanContext[] = [
      { traceId: TRACE_ID, spanId: SPAN_ID, traceFlags: TraceFlags.SAMPLED },
      {
        traceId: TRACE_ID,
        spanId: SPAN_ID,
        traceFlags: TraceFlags.NONE,
        traceState: new TraceState('a=1,b=2'),
      },
      { traceId: TRACE_ID.toUpperCase(), spanId: SPAN_ID, traceFlags: TraceFlags.SAMPLED },
      { traceId: '0'.repeat(32), spanId: SPAN_ID, traceFlags: TraceFlags.SAMPLED },
      { traceId: TRACE_ID, spanId: '0'.repeat(16), traceFlags: TraceFlags.SAMPLED },
      { traceId: TRACE_ID.slice(2), spanId: SPAN_ID, traceFlags: TraceFlags.SAMPLED },
      { traceId: TRACE_ID, spanId: 'not hex at all!!', traceFlags: TraceFlags.SAMPLED },
    ];
    for (const spanContext of spanContexts) {
      for (const base of [ROOT_CONTEXT, suppressTracing(ROOT_CONTEXT)]) {
        const otelContext = trace.setSpanContext(base, spanContext);
        const theirs: Record<string, string> = {};
        const mine: Record<string, string> = {};
        otelW3c.inject(otelContext, theirs, defaultTextMapSetter);
        ours.inject(otelContext, mine, defaultTextMapSetter);
        assert.deepEqual(mine, theirs, JSON.stringify(spanContext));
      }
    }
    const nothing: Record<string, string> = {};
    ours.inject(ROOT_CONTEXT, nothing, defaultTextMapSetter);
    assert.deepEqual(nothing, {});
  });

  it('writes trace flags above 15 as two hex digits, where OpenTelemetry writes three', () => {
    assert.equal(
      formatTraceparent({ traceId: TRACE_ID, spanId: SPAN_ID, traceFlags: 0x81 }),
      `00-${TRACE_ID}-${SPAN_ID}-81`,
    );
  });

  it('parses what it formats', () => {
    const spanContext = { traceId: TRACE_ID, spanId: SPAN_ID, traceFlags: TraceFlags.SAMPLED };
    assert.deepEqual(parseTraceparent(formatTraceparent(spanContext) ?? ''), {
      ...spanContext,
      isRemote: true,
    });
    assert.deepEqual(ours.fields(), otelW3c.fields());
  });
});
