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
import { background, current, DeadlinePropagator, getContext, setContext, withTimeout } from './index.ts';
import { startOutbound } from './outbound.ts';

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
    // Bounds from the clock around each step, not fixed slack: a pause here must not fail the test.
    const deadline = ctx.deadline as number;
    const beforeInject = Date.now();
    propagator.inject(setContext(withSpan, ctx), headers, defaultTextMapSetter);
    const afterInject = Date.now();
    assert.equal(headers.traceparent, TRACEPARENT);
    const timeout = Number(headers['ctx-timeout']);
    assert.ok(
      timeout <= deadline - beforeInject - 10 && timeout >= deadline - afterInject - 10,
      `ctx-timeout ${timeout}`,
    );
    assert.equal(Number(headers['ctx-deadline']), deadline - 10);

    const beforeExtract = Date.now();
    const extracted = propagator.extract(ROOT_CONTEXT, headers, defaultTextMapGetter);
    const inbound = getContext(extracted);
    assert.ok(inbound);
    assert.equal(inbound.traceId, '0af7651916cd43dd8448eb211c80319c');
    const remaining = inbound.remaining();
    assert.ok(
      remaining <= timeout && remaining >= timeout - (Date.now() - beforeExtract),
      `remaining ${remaining}`,
    );
    assert.deepEqual(new DeadlinePropagator().fields(), ['ctx-timeout', 'ctx-deadline']);
  });

  it('writes nothing for a context without a deadline and reads nothing from a carrier without one', () => {
    const headers: Record<string, string> = {};
    propagator.inject(setContext(ROOT_CONTEXT, background()), headers, defaultTextMapSetter);
    assert.deepEqual(headers, {});
    assert.equal(
      propagator.extract(ROOT_CONTEXT, { 'ctx-timeout': 'x' }, defaultTextMapGetter),
      ROOT_CONTEXT,
    );
  });
});

describe('acceptInbound and startOutbound without a tracing SDK', () => {
  it('carry the trace id and the budget through a hop', () => {
    assert.equal(propagation.fields().length, 0, 'no global propagator registered');
    const inbound = acceptInbound({ traceparent: TRACEPARENT, 'ctx-timeout': '500' }, defaultTextMapGetter);
    assert.equal(inbound.ctx.traceId, '0af7651916cd43dd8448eb211c80319c');
    assert.equal(inbound.callerGoneCause, 'upstream_cancelled');
    assert.equal(inbound.budgetMs, 500, 'the budget on arrival is what the caller sent');
    assert.equal(acceptInbound({}, defaultTextMapGetter).budgetMs, undefined);
    const outbound: Record<string, string> = {};
    const unlink = otel.with(inbound.otelContext, () =>
      startOutbound({ ctx: current(), carrier: outbound, setter: defaultTextMapSetter, abort: () => {} }),
    );
    unlink();
    assert.match(outbound.traceparent ?? '', /^00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01$/);
    assert.ok(Number(outbound['ctx-timeout']) <= 495);
    inbound.ctx.cancel();
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
    for (const call of [own, capped, edge, transport]) call.ctx.cancel();
  });

  it('renew: a call that expired before it was served gets a fresh context of its trace; its budget on arrival stays 0', () => {
    const call = acceptInbound({ traceparent: TRACEPARENT }, defaultTextMapGetter, {}, Date.now() - 1);
    const expired = call.ctx;
    assert.equal(expired.done, true);
    const fresh = call.renew(200);
    assert.notEqual(fresh, expired);
    assert.equal(call.ctx, fresh);
    assert.equal(call.scope, fresh);
    assert.equal(getContext(call.otelContext), fresh);
    assert.equal(fresh.done, false);
    assert.ok(fresh.remaining() <= 200 && fresh.remaining() > 150);
    assert.equal(fresh.traceId, '0af7651916cd43dd8448eb211c80319c');
    assert.equal(call.budgetMs, 0);
    call.finish(true);
    assert.equal(fresh.done, true, 'finish ends the fresh context');
  });

  it('leave the active context alone when a span is already active', () => {
    const active = trace.setSpanContext(ROOT_CONTEXT, {
      traceId: '11111111111111111111111111111111',
      spanId: '2222222222222222',
      traceFlags: 1,
    });
    const inbound = otel.with(active, () =>
      acceptInbound({ traceparent: TRACEPARENT }, defaultTextMapGetter),
    );
    assert.equal(inbound.ctx.traceId, '11111111111111111111111111111111');
    inbound.ctx.cancel();
  });

  it('mint a W3C trace at an edge with no trace, and carry it on', () => {
    const first = acceptInbound({}, defaultTextMapGetter);
    const second = acceptInbound({}, defaultTextMapGetter);
    const traceId = first.ctx.traceId ?? '';
    assert.match(traceId, /^[0-9a-f]{32}$/);
    assert.notEqual(traceId, second.ctx.traceId);
    const outbound: Record<string, string> = {};
    otel.with(first.otelContext, () =>
      startOutbound({ ctx: current(), carrier: outbound, setter: defaultTextMapSetter, abort: () => {} })(),
    );
    assert.match(outbound.traceparent ?? '', new RegExp(`^00-${traceId}-[0-9a-f]{16}-00$`));
    const next = acceptInbound(outbound, defaultTextMapGetter);
    assert.equal(next.ctx.traceId, traceId);
    for (const call of [first, second, next]) call.ctx.cancel();
  });

  it('startOutbound refuses a done context and sends nothing', () => {
    const ctx = withTimeout(background(), 0);
    const outbound: Record<string, string> = {};
    assert.throws(
      () => startOutbound({ ctx, carrier: outbound, setter: defaultTextMapSetter, abort: () => {} }),
      (error) => error === ctx.error,
    );
    assert.deepEqual(outbound, {});
  });

  it('startOutbound aborts when the context ends, and not after the unlink', () => {
    const ctx = withTimeout(background(), 10_000);
    const aborted: unknown[] = [];
    const unlink = startOutbound({
      ctx,
      carrier: {},
      setter: defaultTextMapSetter,
      abort: (error) => aborted.push(error),
    });
    ctx.cancel('shutdown');
    assert.deepEqual(aborted, [ctx.error]);
    const other = withTimeout(background(), 10_000);
    startOutbound({
      ctx: other,
      carrier: {},
      setter: defaultTextMapSetter,
      abort: (error) => aborted.push(error),
    })();
    other.cancel();
    assert.equal(aborted.length, 1);
    unlink();
  });
});
