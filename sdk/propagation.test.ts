import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  defaultTextMapGetter,
  defaultTextMapSetter,
  context as otel,
  propagation,
  ROOT_CONTEXT,
  trace,
} from '@opentelemetry/api';
import { CompositePropagator, W3CTraceContextPropagator } from '@opentelemetry/core';
import { acceptInbound } from './inbound.ts';
import {
  background,
  current,
  DeadlinePropagator,
  extractContext,
  injectContext,
  withTimeout,
} from './index.ts';
import { CONTEXT_KEY } from './scope.ts';

const TRACEPARENT = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';

describe('DeadlinePropagator', () => {
  const propagator = new CompositePropagator({
    propagators: [new W3CTraceContextPropagator(), new DeadlinePropagator({ reserveMs: 10 })],
  });

  it('composes with W3C trace context: inject writes both, extract reads both', () => {
    const ctx = withTimeout(background(), 1000);
    const withSpan = trace.setSpanContext(ROOT_CONTEXT, {
      traceId: '0af7651916cd43dd8448eb211c80319c',
      spanId: 'b7ad6b7169203331',
      traceFlags: 1,
      isRemote: true,
    });
    const headers: Record<string, string> = {};
    propagator.inject(withSpan.setValue(CONTEXT_KEY, ctx), headers, defaultTextMapSetter);
    assert.equal(headers.traceparent, TRACEPARENT);
    const timeout = Number(headers['ctx-timeout']);
    assert.ok(timeout <= 990 && timeout >= 980, `ctx-timeout ${timeout}`);
    assert.equal(Number(headers['ctx-deadline']), (ctx.deadline ?? 0) - 10);

    const extracted = propagator.extract(ROOT_CONTEXT, headers, defaultTextMapGetter);
    const inbound = extracted.getValue(CONTEXT_KEY) as ReturnType<typeof current>;
    assert.equal(inbound.traceId, '0af7651916cd43dd8448eb211c80319c');
    assert.ok(inbound.remaining() <= timeout && inbound.remaining() >= timeout - 5);
    assert.deepEqual(new DeadlinePropagator().fields(), ['ctx-timeout', 'ctx-deadline']);
  });

  it('writes nothing for a context without a deadline and reads nothing from a carrier without one', () => {
    const headers: Record<string, string> = {};
    propagator.inject(ROOT_CONTEXT.setValue(CONTEXT_KEY, background()), headers, defaultTextMapSetter);
    assert.deepEqual(headers, {});
    assert.equal(
      propagator.extract(ROOT_CONTEXT, { 'ctx-timeout': 'x' }, defaultTextMapGetter),
      ROOT_CONTEXT,
    );
  });
});

describe('injectContext and extractContext without a tracing SDK', () => {
  it('carry the trace id and the budget through a hop', () => {
    assert.equal(propagation.fields().length, 0, 'no global propagator registered');
    const inbound = acceptInbound({ traceparent: TRACEPARENT, 'ctx-timeout': '500' }, defaultTextMapGetter);
    assert.equal(inbound.ctx.traceId, '0af7651916cd43dd8448eb211c80319c');
    assert.equal(inbound.callerGoneCause, 'upstream_cancelled');
    const outbound: Record<string, string> = {};
    otel.with(inbound.otelContext, () => injectContext(current(), outbound, defaultTextMapSetter));
    assert.match(outbound.traceparent ?? '', /^00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01$/);
    assert.ok(Number(outbound['ctx-timeout']) <= 495);
    inbound.ctx.release();
  });

  it('apply the service budget, the cap, and ignore the caller at a trust boundary', () => {
    const carrier = { 'ctx-timeout': '50000' };
    const own = acceptInbound(carrier, defaultTextMapGetter, { budgetMs: 200 });
    assert.ok(own.ctx.remaining() <= 200);
    const capped = acceptInbound(carrier, defaultTextMapGetter, { maxInboundMs: 1000 });
    assert.ok(capped.ctx.remaining() <= 1000 && capped.ctx.remaining() > 900);
    const edge = acceptInbound({ 'ctx-timeout': '10' }, defaultTextMapGetter, {
      trustInbound: false,
      budgetMs: 2000,
    });
    assert.ok(edge.ctx.remaining() > 1900);
    assert.equal(edge.callerGoneCause, 'client_disconnected');
    const transport = acceptInbound({}, defaultTextMapGetter, {}, Date.now() + 300);
    assert.ok(transport.ctx.remaining() <= 300 && transport.ctx.remaining() > 250);
    for (const call of [own, capped, edge, transport]) call.ctx.release();
  });

  it('leave the active context alone when a span is already active', () => {
    const active = trace.setSpanContext(ROOT_CONTEXT, {
      traceId: '11111111111111111111111111111111',
      spanId: '2222222222222222',
      traceFlags: 1,
    });
    const inbound = otel.with(active, () =>
      extractContext({ traceparent: TRACEPARENT }, defaultTextMapGetter),
    );
    assert.equal(inbound.traceId, '11111111111111111111111111111111');
  });
});
