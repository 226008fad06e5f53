import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { test } from 'node:test';
import { createContextKey, ROOT_CONTEXT } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { addPlainListener } from './events.ts';

test('addPlainListener goes past an OpenTelemetry binding of the emitter, first in line when asked', () => {
  const manager = new AsyncLocalStorageContextManager().enable();
  const key = createContextKey('test.events');
  try {
    const emitter = new EventEmitter();
    manager.bind(ROOT_CONTEXT.setValue(key, 'bound'), emitter);
    const seen: string[] = [];
    emitter.on('close', () => seen.push(`bound listener in ${manager.active().getValue(key)}`));
    addPlainListener(emitter, 'close', () =>
      seen.push(`plain listener in ${manager.active().getValue(key)}`),
    );
    addPlainListener(emitter, 'close', () => seen.push('first'), true);
    manager.with(ROOT_CONTEXT.setValue(key, 'emitting'), () => emitter.emit('close'));
    assert.deepEqual(seen, ['first', 'bound listener in bound', 'plain listener in emitting']);
  } finally {
    manager.disable();
  }
});
