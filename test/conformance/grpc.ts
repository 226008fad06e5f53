/**
 * What every way of wiring a gRPC service owes its calls, run once per wiring (the explicit
 * `wrapService()` + `clientOptions()`, and `init()` on unchanged grpc-js servers and clients): the
 * budget on arrival below the caller's, DEADLINE_EXCEEDED with the cause at the deadline, the
 * caller going away reaching the next hop as `upstream_cancelled`, shedding, the late answer, one
 * metric sample.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type * as Grpc from '@grpc/grpc-js';
import type { Context } from '../../sdk/index.ts';
import { current } from '../../sdk/index.ts';
import { jsonMethod } from '../support/json-method.ts';
import type { Point } from '../support/metrics.ts';
import { ended, grpcFailure, settles, total } from '../support/stacked.ts';
import { BUDGET_MS } from './http.ts';

type Message = Record<string, unknown>;
type Handler = (call: Grpc.ServerUnaryCall<Message, Message>, callback: Grpc.sendUnaryData<Message>) => void;

/** One way of wiring a gRPC service and its clients. */
export interface GrpcWiring {
  readonly name: string;
  /** grpc-js as the wiring loaded it. */
  readonly grpc: typeof Grpc;
  readonly server: () => Grpc.Server;
  /** The implementation as the wiring registers it, with the service budget `budgetMs`. */
  implementation(impl: { call: Handler }, budgetMs: number): object;
  /** The options of a client that calls another hop from a handler. */
  clientOptions(): Grpc.ClientOptions;
  readonly points: (name: string) => Promise<Point[]>;
}

const service = { call: jsonMethod('/ctxflow.test.Conformance/Call') };

/** Runs the gRPC conformance suite against `wiring`. */
export function grpcConformance(wiring: GrpcWiring): void {
  const { grpc } = wiring;
  const Client = grpc.makeGenericClientConstructor(service, 'Conformance');
  type Caller = Grpc.Client & {
    call(
      request: Message,
      metadata: Grpc.Metadata,
      options: Grpc.CallOptions,
      callback: (error: Grpc.ServiceError | null, response?: Message) => void,
    ): Grpc.ClientUnaryCall;
  };

  async function serve(handler: Handler) {
    const server = wiring.server();
    server.addService(
      service,
      wiring.implementation({ call: handler }, BUDGET_MS) as Grpc.UntypedServiceImplementation,
    );
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (error, bound) =>
        error ? reject(error) : resolve(bound),
      ),
    );
    return { address: `127.0.0.1:${port}`, close: () => server.forceShutdown() };
  }

  /** A client with no ctxflow of its own (in the init() wiring, init equips it as any other). */
  const plain = (address: string) =>
    new Client(address, grpc.credentials.createInsecure()) as unknown as Caller;
  const call = (
    client: Caller,
    metadata = new grpc.Metadata(),
    options: Grpc.CallOptions = {},
  ): { done: Promise<{ response?: Message; error?: unknown }>; handle: Grpc.ClientUnaryCall } => {
    let handle: Grpc.ClientUnaryCall | undefined;
    const done = new Promise<{ response?: Message; error?: unknown }>((resolve) => {
      handle = client.call({}, metadata, options, (error, response) =>
        resolve({ response, error: error ?? undefined }),
      );
    });
    return { done, handle: handle as Grpc.ClientUnaryCall };
  };
  const mine = (a: Point['attributes']) => a['rpc.method'] === service.call.path;

  describe(`gRPC conformance: ${wiring.name}`, () => {
    test('the budget on arrival is the caller’s, shrunk; the next hop gets less; one sample per call', async () => {
      let atB = -1;
      const b = await serve((_call, callback) => {
        atB = current().remaining();
        callback(null, {});
      });
      let atA = -1;
      const toB = new Client(
        b.address,
        grpc.credentials.createInsecure(),
        wiring.clientOptions(),
      ) as unknown as Caller;
      const a = await serve((_call, callback) => {
        atA = current().remaining();
        toB.call({}, new grpc.Metadata(), {}, (error) => callback(error, {}));
      });
      const client = plain(a.address);
      try {
        const before = await total(wiring.points, 'ctxflow.budget.arrival', mine);
        const { error } = await call(client, undefined, { deadline: Date.now() + 300 }).done;
        assert.equal(error, undefined, String(error));
        assert.ok(atA > 0 && atA <= 300, `A had ${atA}`);
        assert.ok(atB > 0 && atB < atA, `B got ${atB}, A had ${atA}: never more`);
        await settles(
          () => total(wiring.points, 'ctxflow.budget.arrival', mine),
          before + 2,
          'one sample per call',
        );
      } finally {
        client.close();
        toB.close();
        a.close();
        b.close();
      }
    });

    test('at the deadline: DEADLINE_EXCEEDED with ctx-cancel-reason, the handler’s context ended so', async () => {
      let ctx: Context | undefined;
      const server = await serve(() => {
        ctx = current();
      });
      const client = plain(server.address);
      try {
        const { error } = await call(client).done;
        assert.deepEqual(grpcFailure(error), {
          code: grpc.status.DEADLINE_EXCEEDED,
          reason: 'deadline_exceeded',
        });
        assert.equal(ctx?.cause?.code, 'deadline_exceeded');
      } finally {
        client.close();
        server.close();
      }
    });

    test('the caller goes away: the handler and the next hop end with upstream_cancelled', async () => {
      let downstream: Context | undefined;
      const b = await serve(() => {
        downstream = current();
      });
      let upstream: Context | undefined;
      const toB = new Client(
        b.address,
        grpc.credentials.createInsecure(),
        wiring.clientOptions(),
      ) as unknown as Caller;
      const a = await serve((_call, callback) => {
        upstream = current();
        toB.call({}, new grpc.Metadata(), {}, (error) => callback(error, {}));
      });
      const client = plain(a.address);
      try {
        const { done, handle } = call(client, undefined, { deadline: Date.now() + 5_000 });
        await waitFor(() => downstream !== undefined, 'the call reached B');
        handle.cancel();
        const { error } = await done;
        assert.equal((error as Grpc.ServiceError).code, grpc.status.CANCELLED);
        await waitFor(() => downstream?.done === true, 'B’s context ended');
        assert.equal(upstream?.cause?.code, 'upstream_cancelled');
        assert.equal(downstream?.cause?.code, 'upstream_cancelled');
      } finally {
        client.close();
        toB.close();
        a.close();
        b.close();
      }
    });

    test('shedding: a call with less than the minimum left gets DEADLINE_EXCEEDED without running the handler', async () => {
      let ran = 0;
      const server = await serve((_call, callback) => {
        ran++;
        callback(null, {});
      });
      const client = plain(server.address);
      try {
        const metadata = new grpc.Metadata();
        metadata.set('ctx-timeout', '2');
        const { error } = await call(client, metadata).done;
        assert.deepEqual(grpcFailure(error), {
          code: grpc.status.DEADLINE_EXCEEDED,
          reason: 'deadline_exceeded budget below minimum',
        });
        assert.equal(ran, 0);
      } finally {
        client.close();
        server.close();
      }
    });

    test('a late answer is dropped, not thrown, and counted as outlived work', async () => {
      let lateError: unknown;
      let answeredLate = false;
      const server = await serve((_call, callback) => {
        void ended(current()).then(() =>
          setImmediate(() => {
            try {
              callback(null, { late: true });
            } catch (error) {
              lateError = error;
            }
            answeredLate = true;
          }),
        );
      });
      const late = () =>
        total(wiring.points, 'ctxflow.outlived', (a) => a['ctxflow.work'] === 'grpc.response');
      const client = plain(server.address);
      try {
        const before = await late();
        const metadata = new grpc.Metadata();
        metadata.set('ctx-timeout', '100');
        const { error } = await call(client, metadata).done;
        assert.deepEqual(grpcFailure(error), {
          code: grpc.status.DEADLINE_EXCEEDED,
          reason: 'deadline_exceeded',
        });
        await waitFor(() => answeredLate, 'the handler answered late');
        assert.equal(lateError, undefined);
        await settles(late, before + 1, 'the late answer counted once');
      } finally {
        client.close();
        server.close();
      }
    });
  });
}

async function waitFor(ready: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 100 && !ready(); i++) await new Promise((resolve) => setTimeout(resolve, 30));
  assert.ok(ready(), what);
}
