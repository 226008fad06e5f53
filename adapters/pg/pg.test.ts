import assert from 'node:assert/strict';
import net from 'node:net';
import { test } from 'node:test';
import { background, withCancel, withTimeout } from '../../sdk/index.ts';
import { sendCancel } from './cancel.ts';
import { MAX_STATEMENT_TIMEOUT_MS, statementTimeout, timeoutStatement } from './client.ts';

test('statementTimeout: what is left, at least 1 ms, capped; the default without a deadline or under a shorter configured one', () => {
  assert.equal(statementTimeout(background(), 0), 'default');
  assert.equal(statementTimeout(withCancel(background()), 0), 'default');
  const left = statementTimeout(withTimeout(background(), 5_000), 0);
  assert.ok(typeof left === 'number' && left > 4_000 && left <= 5_000);
  assert.equal(statementTimeout(withTimeout(background(), 0.2), 0), 1);
  assert.equal(statementTimeout(withTimeout(background(), 1e15), 0), MAX_STATEMENT_TIMEOUT_MS);
  assert.equal(statementTimeout(withTimeout(background(), 5_000), 1_000), 'default');
  assert.ok(typeof statementTimeout(withTimeout(background(), 500), 1_000) === 'number');
});

test('timeoutStatement: a SET only when the session is shorter than wanted or far longer', () => {
  assert.equal(timeoutStatement('default', 'default'), undefined);
  assert.deepEqual(timeoutStatement(1_000, 'default'), {
    sql: 'SET statement_timeout TO DEFAULT',
    value: 'default',
  });
  assert.deepEqual(timeoutStatement(undefined, 1_000), { sql: 'SET statement_timeout = 1130', value: 1_130 });
  assert.equal(timeoutStatement(1_130, 1_000), undefined);
  assert.equal(timeoutStatement(1_130, 950), undefined);
  assert.ok(timeoutStatement(1_130, 1_200) !== undefined, 'shorter than wanted');
  assert.ok(timeoutStatement(1_130, 500) !== undefined, 'far longer than wanted');
  assert.equal(timeoutStatement(undefined, MAX_STATEMENT_TIMEOUT_MS)?.value, MAX_STATEMENT_TIMEOUT_MS);
});

test('sendCancel writes PostgreSQL CancelRequest and resolves once the server closes', async (t) => {
  let received = Buffer.alloc(0);
  const server = net.createServer((socket) => {
    socket.on('data', (chunk) => {
      received = Buffer.concat([received, chunk]);
      if (received.length >= 16) socket.end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => server.close());
  const port = (server.address() as net.AddressInfo).port;
  assert.equal(await sendCancel({ host: '127.0.0.1', port, processID: 4242, secretKey: -7 }), true);
  assert.deepEqual(
    [received.readInt32BE(0), received.readInt32BE(4), received.readInt32BE(8), received.readInt32BE(12)],
    [16, 80877102, 4242, -7],
  );
});

test('sendCancel: nothing to send without a backend key; a refused connection sent nothing', async () => {
  assert.equal(await sendCancel({ host: '127.0.0.1', port: 1, processID: null, secretKey: null }), true);
  const closed = net.createServer();
  await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
  const port = (closed.address() as net.AddressInfo).port;
  await new Promise((resolve) => closed.close(resolve));
  assert.equal(await sendCancel({ host: '127.0.0.1', port, processID: 1, secretKey: 1 }), true);
});
