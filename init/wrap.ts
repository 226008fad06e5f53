/** For init()'s module hooks: loading a package through them, and wrapping on top of others' wrappers. */
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

/**
 * Loads a CommonJS package now, when installed, through the require hooks of ctxflow and the
 * OpenTelemetry instrumentations: an ES module application's `import` of a CommonJS package does
 * not go through `require`, and without the loader hook (no tracing) nothing would patch it; the
 * application then gets the same, patched, module from the cache.
 */
export function loadThroughHooks(name: string): void {
  let resolved: string;
  try {
    resolved = require.resolve(name);
  } catch {
    return;
  }
  require(resolved);
}

// A wrapper of ours.
const OURS = Symbol('ctxflow.init.wrapper');

interface Wrapper {
  (...args: never[]): unknown;
  __original: unknown;
  __unwrap: () => void;
  __wrapped: true;
  [OURS]: true;
}

/**
 * Wraps a method on top of whatever wraps it already. OpenTelemetry's `_wrap` would first undo
 * any wrapper, OpenTelemetry's own instrumentations' included (kafkajs, grpc); ours must sit on
 * top of theirs, so that their spans are made and active when ours runs. A module is often patched
 * twice (seen once through `require`, once through the ES module loader): applied again, ours
 * replaces itself; undone by another instrumentation's `_wrap` before it wraps again, ours gives
 * back the function under every wrapper, so that that instrumentation's wrapper is not stacked on
 * its own earlier one (two client spans per call).
 */
export function wrapOnTop<T extends object, K extends keyof T & string>(
  target: T,
  name: K,
  make: (original: T[K]) => T[K],
): void {
  unwrapOnTop(target, name);
  const original = target[name];
  const wrapper = make(original) as unknown as Wrapper;
  Object.assign(wrapper, {
    __original: original,
    __wrapped: true,
    [OURS]: true,
    __unwrap: () => {
      if (target[name] === (wrapper as unknown)) define(target, name, innermost(original));
    },
  });
  define(target, name, wrapper as unknown as T[K]);
}

/** Removes our wrapper when it is the top one, giving back what it wrapped; under another one it stays. */
export function unwrapOnTop<T extends object, K extends keyof T & string>(target: T, name: K): void {
  const current = target[name] as Partial<Wrapper> | undefined;
  if (current?.[OURS] === true) define(target, name, current.__original as T[K]);
}

/** Sets a property as shimmer does: module exports are often getters (TypeScript's re-exports). */
function define<T extends object, K extends keyof T>(target: T, name: K, value: T[K]): void {
  Object.defineProperty(target, name, {
    configurable: true,
    enumerable: Object.prototype.propertyIsEnumerable.call(target, name),
    writable: true,
    value,
  });
}

/** The function under every shimmer-style wrapper (`__wrapped` with `__original`). */
function innermost<F>(fn: F): F {
  let inner = fn as Partial<Wrapper> | undefined;
  while (inner?.__wrapped === true && inner.__original !== undefined) {
    inner = inner.__original as Partial<Wrapper>;
  }
  return inner as F;
}
