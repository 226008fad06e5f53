/** The gRPC wire side shared by client and server: metadata as a carrier, and the status ↔ cause mapping. */
import type { Deadline, Metadata, StatusObject } from '@grpc/grpc-js';
import * as grpc from '@grpc/grpc-js';
import type { TextMapGetter, TextMapSetter } from '@opentelemetry/api';
import type { Cause, CauseCode, ContextDoneError } from '../../sdk/index.ts';
import { CANCEL_REASON_HEADER, decodeCause, encodeCause, NEAR_DEADLINE_MS } from '../../sdk/wire.ts';

export { NEAR_DEADLINE_MS };

export const Status = grpc.status;

/** True when `deadline` (epoch ms) is no more than NEAR_DEADLINE_MS away (a call cancelled then ended by it). */
export function nearDeadline(deadline: number | undefined): boolean {
  return deadline !== undefined && Date.now() >= deadline - NEAR_DEADLINE_MS;
}

export const metadataSetter: TextMapSetter<Metadata> = {
  set(carrier, key, value) {
    carrier.set(key, value);
  },
};

/** Reads metadata as a propagator carrier: string values only, arrays when repeated. */
export const metadataGetter: TextMapGetter<Metadata> = {
  get(carrier, key) {
    return headerValue(carrier.get(key));
  },
  keys(carrier) {
    return Object.keys(carrier.getMap());
  },
};

function headerValue(values: readonly unknown[]): string | string[] | undefined {
  if (values.length === 0) return undefined;
  if (values.length === 1) return typeof values[0] === 'string' ? values[0] : undefined;
  return values.filter((value): value is string => typeof value === 'string');
}

export function reasonOf(metadata: Metadata | null | undefined): Cause | undefined {
  if (metadata == null || typeof metadata.get !== 'function') return undefined;
  const value = headerValue(metadata.get(CANCEL_REASON_HEADER));
  return value === undefined ? undefined : decodeCause(value);
}

export function withReason(metadata: Metadata | null | undefined, cause: Cause): Metadata {
  const out =
    metadata == null || typeof metadata.clone !== 'function' ? new grpc.Metadata() : metadata.clone();
  out.set(CANCEL_REASON_HEADER, encodeCause(cause));
  return out;
}

/** The gRPC status that reports a context ended with `code`: DEADLINE_EXCEEDED for its deadline, CANCELLED otherwise. */
export function grpcStatusFor(code: CauseCode): grpc.status {
  return code === 'deadline_exceeded' ? Status.DEADLINE_EXCEEDED : Status.CANCELLED;
}

/** The status that ends a call with a context's end: DEADLINE_EXCEEDED or CANCELLED, with ctx-cancel-reason. */
export function contextStatus(error: ContextDoneError, code = grpcStatusFor(error.cause.code)): StatusObject {
  return { code, details: `ctxflow: ${error.message}`, metadata: withReason(undefined, error.cause) };
}

export function fallbackCode(code: grpc.status): CauseCode {
  return code === Status.DEADLINE_EXCEEDED ? 'deadline_exceeded' : 'cancelled';
}

export function isContextStatus(code: number): boolean {
  return code === Status.DEADLINE_EXCEEDED || code === Status.CANCELLED;
}

/** Epoch milliseconds of a grpc-js deadline; undefined for none (Infinity) or an invalid one. */
export function epochMs(deadline: Deadline | undefined): number | undefined {
  if (deadline === undefined) return undefined;
  const ms = deadline instanceof Date ? deadline.getTime() : deadline;
  return Number.isFinite(ms) ? ms : undefined;
}

export function noop(): void {}
