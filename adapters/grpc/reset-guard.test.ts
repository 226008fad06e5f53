import assert from 'node:assert/strict';
import http2 from 'node:http2';
import { describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { type ProbeImplementation, startProbeServer } from '../../test/support/grpc.ts';
import { createServer, DEFAULT_RESET_GUARD, resetGuard } from './reset-guard.ts';

/**
 * Opens `count` streams on one raw HTTP/2 session and resets each right after its headers, as a
 * client cancelling calls does (HEADERS then RST_STREAM(CANCEL)); returns the GOAWAY error code the
 * server sent, if any, once the session has closed or every stream has closed and a ping came back
 * (frames arrive in order: a GOAWAY sent before the ping's answer has arrived by then).
 */
async function resetStreams(address: string, count: number): Promise<number | undefined> {
  const session = http2.connect(`http://${address}`);
  session.on('error', () => {});
  let goaway: number | undefined;
  session.on('goaway', (code) => {
    goaway ??= code;
  });
  const sessionClosed = new Promise<void>((resolve) => session.once('close', () => resolve()));
  await new Promise<void>((resolve, reject) => {
    session.once('connect', () => resolve());
    session.once('error', reject);
  });
  const closed: Promise<void>[] = [];
  for (let i = 0; i < count && goaway === undefined && !session.closed && !session.destroyed; i++) {
    const stream = session.request({
      ':method': 'POST',
      ':path': '/ctxflow.test.Probe/Unary',
      'content-type': 'application/grpc',
      te: 'trailers',
    });
    stream.on('error', () => {});
    closed.push(new Promise((resolve) => stream.once('close', () => resolve())));
    stream.close(http2.constants.NGHTTP2_CANCEL);
    // A turn every few streams, so frames go out in batches as under real load.
    if (i % 50 === 49) await new Promise((resolve) => setImmediate(resolve));
  }
  const streamsDone = Promise.all(closed).then(
    () =>
      new Promise<void>((resolve) => {
        if (session.closed || session.destroyed || !session.ping(() => resolve())) resolve();
      }),
  );
  await Promise.race([sessionClosed, streamsDone]);
  session.destroy();
  return goaway;
}

// Servers here are stopped with forceShutdown: after a session was ended by the guard, grpc-js's
// tryShutdown callback did not always come (seen under load).
// resetStreams stops at the first GOAWAY: a guard trips once the resets sent outgrow its burst plus
// its rate times the time taken, which they do at any pace above the rate (thousands per second
// here, a few hundred on a loaded machine), well before these counts.
const PAST_DEFAULT_GUARD = 5_000;
const WITHIN_RAISED_GUARD = 1_500;

const slow: ProbeImplementation = {
  unary: (_call, callback) => {
    setTimeout(() => callback(null, {}), 50);
  },
};

describe('resetGuard()', { timeout: 30_000 }, () => {
  test("Node's default guard closes a session that resets streams past 1 000 + 33/s (GOAWAY INTERNAL_ERROR)", async () => {
    const server = await startProbeServer(slow, { ctxflow: false });
    try {
      assert.equal(
        await resetStreams(server.address, PAST_DEFAULT_GUARD),
        http2.constants.NGHTTP2_INTERNAL_ERROR,
      );
    } finally {
      server.server.forceShutdown();
    }
  });

  test('with resetGuard() a session that resets 1 500 streams stays open', async () => {
    const server = await startProbeServer(slow, { ctxflow: false, resetGuard: true });
    try {
      assert.equal(await resetStreams(server.address, WITHIN_RAISED_GUARD), undefined);
    } finally {
      server.server.forceShutdown();
    }
  });

  test('the raised guard still closes a session that resets past its burst', async () => {
    const server = await startProbeServer(slow, {
      ctxflow: false,
      resetGuard: { streamResetBurst: 200, streamResetRate: 10 },
    });
    try {
      assert.equal(await resetStreams(server.address, 2_000), http2.constants.NGHTTP2_INTERNAL_ERROR);
    } finally {
      server.server.forceShutdown();
    }
  });

  test('limits must be positive integers', () => {
    const server = new grpc.Server();
    for (const bad of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, '10' as unknown as number]) {
      assert.throws(() => resetGuard(server, { streamResetRate: bad }), RangeError);
      assert.throws(() => resetGuard(server, { streamResetBurst: bad }), RangeError);
    }
  });

  test('createServer() builds a grpc-js Server with the default guard', () => {
    const server = createServer({ 'grpc.max_concurrent_streams': 100 });
    assert.ok(server instanceof grpc.Server);
    const options = (server as unknown as { commonServerOptions: Record<string, unknown> })
      .commonServerOptions;
    assert.equal(options.streamResetBurst, DEFAULT_RESET_GUARD.streamResetBurst);
    assert.equal(options.streamResetRate, DEFAULT_RESET_GUARD.streamResetRate);
    assert.deepEqual(options.settings, { maxConcurrentStreams: 100 });
  });

  test('a grpc-js Server without the options field is left as it is', () => {
    const stand = {} as grpc.Server;
    assert.equal(resetGuard(stand), stand);
    assert.deepEqual(Object.keys(stand), []);
  });
});
