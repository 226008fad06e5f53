/**
 * Interop with Connect (connect-es): a real Connect client calls an express route served by
 * ctxflow's deadlines(), with a timeout on the call, and the handler's budget is that timeout;
 * the same with connect-node's gRPC-Web transport, which sends grpc-timeout on HTTP/1.1. The
 * other way, ctxflow's fetch with `alsoSend` gives a real Connect server (connect-node, no
 * ctxflow) the budget in its own header.
 */
import assert from 'node:assert/strict';
import type http from 'node:http';
import { after, before, test } from 'node:test';
import { create, createFileRegistry, toBinary } from '@bufbuild/protobuf';
import type { GenService } from '@bufbuild/protobuf/codegenv2';
import {
  FileDescriptorProtoSchema,
  file_google_protobuf_wrappers,
  Int32ValueSchema,
  type StringValueSchema,
} from '@bufbuild/protobuf/wkt';
import { Code, ConnectError, createClient } from '@connectrpc/connect';
import { connectNodeAdapter, createConnectTransport, createGrpcWebTransport } from '@connectrpc/connect-node';
import express from 'express';
import { type ServerOptions as DeadlineOptions, deadlines, errorHandler } from '../adapters/http/express.ts';
import { fetch } from '../adapters/http/fetch.ts';
import { current } from '../sdk/index.ts';
import { type Listening, listen } from './support/http.ts';

/** `service Probe { rpc Budget(StringValue) returns (Int32Value); rpc Relay(...) returns (...); }`, built without codegen. */
type Probe = GenService<{
  budget: { methodKind: 'unary'; input: typeof StringValueSchema; output: typeof Int32ValueSchema };
  relay: { methodKind: 'unary'; input: typeof StringValueSchema; output: typeof Int32ValueSchema };
}>;
const unary = (name: string) => ({
  name,
  inputType: '.google.protobuf.StringValue',
  outputType: '.google.protobuf.Int32Value',
});
const Probe = createFileRegistry(
  create(FileDescriptorProtoSchema, {
    name: 'ctxflow/test/probe.proto',
    package: 'ctxflow.test',
    syntax: 'proto3',
    dependency: ['google/protobuf/wrappers.proto'],
    service: [{ name: 'Probe', method: [unary('Budget'), unary('Relay')] }],
  }),
  (file) => (file === 'google/protobuf/wrappers.proto' ? file_google_protobuf_wrappers : undefined),
).getService('ctxflow.test.Probe') as Probe;

const OWN_BUDGET = 10_000;
const TIMEOUT = 800;
/** How much of a budget may pass between the client's send and the handler's start on a busy machine. */
const SLACK = 200;

/** What ctxflow's handler saw: its budget on arrival, and what it had left when it called on. */
interface Seen {
  remaining: number;
  sentRemaining?: number;
}

let edge: Listening;
let trusting: Listening;
let connectServer: Listening;
const seen: Seen[] = [];

/** The Connect unary protocol (JSON) and gRPC-Web (binary) by hand, on an express route under deadlines(). */
function probeApp(options: DeadlineOptions): express.Express {
  const app = express();
  app.use(deadlines(options));
  app.use(express.raw({ type: () => true }));
  app.post('/ctxflow.test.Probe/Budget', (req, res) => {
    const remaining = Math.floor(current().remaining());
    seen.push({ remaining });
    if (String(req.headers['content-type']).startsWith('application/grpc-web')) {
      const message = toBinary(Int32ValueSchema, create(Int32ValueSchema, { value: remaining }));
      res.type('application/grpc-web+proto');
      res.end(Buffer.concat([frame(0x00, message), frame(0x80, Buffer.from('grpc-status: 0\r\n'))]));
      return;
    }
    res.type('application/json').send(JSON.stringify(remaining));
  });
  app.post('/ctxflow.test.Probe/Relay', async (_req, res) => {
    const entry: Seen = { remaining: Math.floor(current().remaining()) };
    seen.push(entry);
    entry.sentRemaining = current().remaining();
    // A Connect unary call by hand: the downstream server is Connect only and knows no ctx-timeout.
    const answer = await fetch(`${connectServer.url}/ctxflow.test.Probe/Budget`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'connect-protocol-version': '1' },
      body: JSON.stringify('relayed'),
      alsoSend: ['connect-timeout-ms'],
    });
    res.type('application/json').send(await answer.text());
  });
  app.use(errorHandler());
  return app;
}

/** One gRPC-Web frame: flags, a big-endian length, the bytes. */
function frame(flags: number, bytes: Uint8Array): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt8(flags, 0);
  head.writeUInt32BE(bytes.length, 1);
  return Buffer.concat([head, bytes]);
}

before(async () => {
  trusting = await listen(probeApp({ budgetMs: OWN_BUDGET }));
  edge = await listen(probeApp({ budgetMs: OWN_BUDGET, trustInbound: false }));
  const handler = connectNodeAdapter({
    routes: (router) =>
      router.service(Probe, {
        // What a Connect server makes of the header: the timeout it gives its handler.
        budget: (_request, context) => ({ value: context.timeoutMs() ?? -1 }),
        relay: () => {
          throw new ConnectError('not here', Code.Unimplemented);
        },
      }),
  });
  connectServer = await listen(handler as http.RequestListener);
});

after(async () => {
  await Promise.all([trusting.close(), edge.close(), connectServer.close()]);
});

const connect = (url: string) =>
  createClient(Probe, createConnectTransport({ baseUrl: url, httpVersion: '1.1', useBinaryFormat: false }));
const grpcWeb = (url: string) =>
  createClient(Probe, createGrpcWebTransport({ baseUrl: url, httpVersion: '1.1' }));

function assertBudget(remaining: number, timeout: number): void {
  assert.ok(
    remaining <= timeout && remaining > timeout - SLACK,
    `handler budget ${remaining} for a ${timeout} ms call`,
  );
}

test('a Connect call with a timeout gives the express handler that budget (Connect-Timeout-Ms)', async () => {
  const { value } = await connect(trusting.url).budget({ value: 'x' }, { timeoutMs: TIMEOUT });
  assertBudget(value, TIMEOUT);
  assert.equal(seen.at(-1)?.remaining, value);
  // Without a timeout on the call, the service's own budget applies.
  const { value: own } = await connect(trusting.url).budget({ value: 'x' });
  assertBudget(own, OWN_BUDGET);
});

test('a gRPC-Web call over HTTP/1.1 with a timeout gives the handler that budget (grpc-timeout)', async () => {
  const { value } = await grpcWeb(trusting.url).budget({ value: 'x' }, { timeoutMs: TIMEOUT });
  assertBudget(value, TIMEOUT);
});

test('at a trust boundary the Connect and gRPC-Web timeouts are ignored: the own budget applies', async () => {
  const viaConnect = await connect(edge.url).budget({ value: 'x' }, { timeoutMs: TIMEOUT });
  assertBudget(viaConnect.value, OWN_BUDGET);
  const viaGrpcWeb = await grpcWeb(edge.url).budget({ value: 'x' }, { timeoutMs: TIMEOUT });
  assertBudget(viaGrpcWeb.value, OWN_BUDGET);
});

test('alsoSend gives a Connect server downstream the remaining budget less the reserve', async () => {
  const { value } = await connect(trusting.url).relay({ value: 'x' }, { timeoutMs: TIMEOUT });
  const hop = seen.at(-1) as Seen;
  assertBudget(hop.remaining, TIMEOUT);
  const sent = hop.sentRemaining as number;
  // What the Connect server's handler was given: what ctxflow had left at send, less the 5 ms reserve.
  assert.ok(
    value <= sent - 5 && value > sent - 5 - SLACK,
    `Connect server got ${value}, ${sent} left at send`,
  );
});
