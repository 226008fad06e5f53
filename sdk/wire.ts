/**
 * `ctxflow/wire`: the API for adapter authors, not for applications. A transport adapter builds each
 * inbound call's context with `acceptInbound` and sends each outbound call with `startOutbound`;
 * the codecs, header names and status tables are the wire format of docs/wire-format.md. ctxflow's
 * own adapters use exactly this entry point.
 */

export {
  type CancelChannel,
  type CancelListener,
  CancelRegistry,
  type CancelRegistryOptions,
} from './cancel.ts';
export {
  CANCEL_REASON_HEADER,
  DEADLINE_HEADER,
  DEFAULT_MAX_INBOUND_MS,
  DEFAULT_RESERVE_MS,
  type DecodeOptions,
  decodeCause,
  decodeDeadline,
  decodeRequestId,
  decodeTimeout,
  type EncodeOptions,
  encodeCause,
  encodeDeadline,
  encodeTimeout,
  type HeaderValue,
  inboundDeadline,
  REQUEST_ID_HEADER,
  remoteError,
  TIMEOUT_HEADER,
  type WireOptions,
} from './codec.ts';
export { cancelAt } from './context.ts';
export { errorFor } from './errors.ts';
export { addPlainListener } from './events.ts';
export {
  CONNECT_TIMEOUT_HEADER,
  checkForeignHeaders,
  decodeForeign,
  ENVOY_TIMEOUT_HEADER,
  encodeConnectTimeout,
  encodeGrpcTimeout,
  FOREIGN_HEADERS,
  FOREIGN_OUTBOUND_HEADERS,
  type ForeignHeader,
  type ForeignOutboundHeader,
  foreignDeadline,
  GRPC_TIMEOUT_HEADER,
} from './foreign.ts';
export {
  acceptInbound,
  InboundCall,
  type InboundOptions,
  NEAR_DEADLINE_MS,
} from './inbound.ts';
export {
  adapterInstruments,
  BUDGET_BUCKETS_MS,
  type CauseSource,
  countEnded,
  countShed,
  hopAttributes,
  metricCause,
  recordArrival,
  type Transport,
} from './metrics.ts';
export { isTracingSuppressed, rpcServerSpan } from './otel-keys.ts';
export {
  type OutboundCall,
  type OutboundHeaders,
  type OutboundOptions,
  type OutboundSetter,
  startOutbound,
} from './outbound.ts';
export { ensureContextManager, withValue } from './scope.ts';
export { httpFallbackCause, httpStatusFor } from './status.ts';
export { TraceContextPropagator } from './traceparent.ts';
export {
  ATTR_BUDGET_ARRIVAL,
  ATTR_BUDGET_SENT,
  ATTR_CAUSE,
  ATTR_CAUSE_MESSAGE,
  ATTR_DEADLINE,
  EVENT_CONTEXT_END,
  traceEnd,
  traceInbound,
} from './tracing.ts';
