// The bench service: Unary echoes its request; Hang (server streaming) sends one message, then
// waits until the call is cancelled. Messages are raw bytes, so serialization costs nothing.
import type grpc from '@grpc/grpc-js';

const identity = (value: Buffer): Buffer => value;

function method(name: string, responseStream: boolean) {
  return {
    path: `/ctxflow.bench.Bench/${name}`,
    requestStream: false,
    responseStream,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
  };
}

export const benchService = {
  unary: method('Unary', false),
  hang: method('Hang', true),
} satisfies grpc.ServiceDefinition;

/**
 * bare: grpc-js alone; otel: + OpenTelemetry; ctxflow: + OTel + ctxflow; alone: ctxflow without
 * OpenTelemetry's SDK; intercepted: as alone, with serverInterceptor() in front of wrapService();
 * deadline: + OTel + a deadline set by hand on each call (what ctxflow's cost compares with when
 * budgets matter); headers: grpc-js alone sending by hand what ctxflow sends under a trace (a
 * deadline option, hence grpc-timeout, and a fresh traceparent per call); context: headers with each call run in an
 * OpenTelemetry context of its own (AsyncLocalStorage) on both sides, the least any context
 * propagation costs. The last four are not run unless asked for.
 */
export type Variant =
  | 'bare'
  | 'otel'
  | 'ctxflow'
  | 'alone'
  | 'intercepted'
  | 'deadline'
  | 'headers'
  | 'context';
export const ALL_VARIANTS: readonly Variant[] = [
  'bare',
  'otel',
  'ctxflow',
  'alone',
  'intercepted',
  'deadline',
  'headers',
  'context',
];
/** Variants that load OpenTelemetry's SDK. */
export const TRACED: readonly Variant[] = ['otel', 'ctxflow', 'deadline'];
/** Variants that run ctxflow. */
export const WITH_CTXFLOW: readonly Variant[] = ['ctxflow', 'alone', 'intercepted'];
