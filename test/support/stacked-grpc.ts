/** A two-method gRPC service for the stacked-layer suites, JSON over grpc-js's generic client and server. */
import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';
import type { Context } from '../../sdk/index.ts';
import { deserialize, jsonMethod, serialize } from './json-method.ts';
import type { Point } from './metrics.ts';
import {
  ended,
  enter,
  grpcFailure,
  type HandlerRecord,
  INNER_MS,
  OUTER_MS,
  settles,
  total,
  waitUntil,
} from './stacked.ts';

type Message = Record<string, unknown>;

/** The service `name` (`/ctxflow.test.<name>/Inner` and `/Loose`): two unary methods. */
export function stackService(name: string) {
  const method = (m: string) => jsonMethod(`/ctxflow.test.${name}/${m}`);
  return { inner: method('Inner'), loose: method('Loose') } satisfies grpc.ServiceDefinition;
}

type Call = grpc.ServerUnaryCall<Message, Message>;

/**
 * A callback-style implementation recording what its handlers see: `{ wait: true }` waits for the
 * context's end, then answers anyway (a late answer, to be dropped).
 */
export function stackImplementation(
  records: HandlerRecord[],
  contextOf: (call: Call) => Context | undefined,
) {
  const handle = (call: Call, callback: grpc.sendUnaryData<Message>): void => {
    const record = enter(records, () => contextOf(call));
    if (call.request.wait !== true) {
      callback(null, { remaining: record.remaining });
      return;
    }
    void ended(record.ctx).then(() => {
      setImmediate(() => {
        try {
          callback(null, { late: true });
        } catch (error) {
          record.lateError = error;
        }
        record.answeredLate = true;
      });
    });
  };
  return { inner: handle, loose: handle };
}

/** Starts `server` on 127.0.0.1; returns its address. */
export async function bind(server: grpc.Server): Promise<string> {
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (error, bound) =>
      error ? reject(error) : resolve(bound),
    ),
  );
  return `127.0.0.1:${port}`;
}

function call(
  client: grpc.Client,
  path: string,
  request: Message,
  metadata = new grpc.Metadata(),
): Promise<{ response?: Message; error?: unknown; elapsedMs: number }> {
  const started = Date.now();
  return new Promise((resolve) => {
    client.makeUnaryRequest(path, serialize, deserialize, request, metadata, {}, (error, response) =>
      resolve({
        response: response ?? undefined,
        error: error ?? undefined,
        elapsedMs: Date.now() - started,
      }),
    );
  });
}

/**
 * The gRPC checks of a stacked server of service `name` where Inner has the inner budget and Loose
 * a looser one than the caller's (a plain grpc-js client, no ctxflow on its side).
 */
export async function checkGrpc(
  address: string,
  name: string,
  records: HandlerRecord[],
  points: (name: string) => Promise<Point[]>,
): Promise<void> {
  const service = stackService(name);
  const client = new grpc.Client(address, grpc.credentials.createInsecure());
  const isOurs = (a: Point['attributes']) => String(a['rpc.method']).startsWith(`/ctxflow.test.${name}/`);
  const arrivals = () => total(points, 'ctxflow.budget.arrival', isOurs);
  const ends = () =>
    total(points, 'ctxflow.context.ended', (a) => isOurs(a) && a['ctxflow.cause'] === 'deadline_exceeded');
  try {
    const before = { arrivals: await arrivals(), ends: await ends() };

    const inner = await call(client, service.inner.path, {});
    assert.equal(inner.error, undefined, String(inner.error));
    const narrowed = records.at(-1) as HandlerRecord;
    assert.ok(narrowed.sameAsContextOf, 'contextOf(call) is the handler’s current()');
    assert.ok(narrowed.remaining > 0 && narrowed.remaining <= INNER_MS, `remaining ${narrowed.remaining}`);

    const metadata = new grpc.Metadata();
    metadata.set('ctx-timeout', '2000');
    const loose = await call(client, service.loose.path, {}, metadata);
    assert.equal(loose.error, undefined, String(loose.error));
    const outer = records.at(-1) as HandlerRecord;
    assert.ok(outer.sameAsContextOf);
    assert.ok(outer.remaining > INNER_MS && outer.remaining <= 2000, `remaining ${outer.remaining}`);

    const timedOut = await call(client, service.inner.path, { wait: true });
    assert.deepEqual(grpcFailure(timedOut.error), {
      code: grpc.status.DEADLINE_EXCEEDED,
      reason: 'deadline_exceeded',
    });
    assert.ok(timedOut.elapsedMs < OUTER_MS / 2, `answered after ${timedOut.elapsedMs} ms`);
    const waited = records.at(-1) as HandlerRecord;
    await waitUntil(() => waited.answeredLate === true, 'the handler answered after the status');
    assert.equal(waited.lateError, undefined, `the late answer threw ${String(waited.lateError)}`);

    await settles(arrivals, before.arrivals + 3, 'one budget-on-arrival sample per call');
    await settles(ends, before.ends + 1, 'the end counted once');
  } finally {
    client.close();
  }
}
