import assert from 'node:assert/strict';
import { test } from 'node:test';
import { httpFallbackCause, httpStatusFor } from './status.ts';

test('httpStatusFor maps causes to statuses', () => {
  assert.equal(httpStatusFor('deadline_exceeded'), 504);
  assert.equal(httpStatusFor('shutdown'), 503);
  assert.equal(httpStatusFor('error'), 500);
  assert.equal(httpStatusFor('client_disconnected'), 499);
  assert.equal(httpStatusFor('upstream_cancelled'), 499);
  assert.equal(httpStatusFor('my_reason'), 499);
});

test('httpFallbackCause reads back the statuses that report a context end, and no others', () => {
  assert.equal(httpFallbackCause(504), 'deadline_exceeded');
  assert.equal(httpFallbackCause(503), 'cancelled');
  assert.equal(httpFallbackCause(499), 'cancelled');
  for (const status of [200, 400, 404, 500, 502]) assert.equal(httpFallbackCause(status), undefined);
});
