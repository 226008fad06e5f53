/**
 * Whether a package is installed, and when the application loads it: init() sets up its gRPC and
 * Kafka hooks (and loads OpenTelemetry's module patching they are built on) only for the
 * transports the application actually loads, not for every one that happens to be installed.
 */
import { createRequire, Module } from 'node:module';

const require = createRequire(import.meta.url);

/** True when `name` resolves from ctxflow's place in node_modules (the application's, for a peer). */
export function installed(name: string): boolean {
  try {
    require.resolve(name);
    return true;
  } catch {
    return false;
  }
}

/** CommonJS's loader, which both `require` and an ES module's `import` of a CommonJS file go through. */
const loader = Module as unknown as { _load(request: string, ...rest: unknown[]): unknown };

/**
 * Calls `load` once, just before the application gets package `name`: at once when the package is
 * in the CommonJS cache already (required, or being linked by a static import of the module that
 * runs init(): the ES module loader puts it there before evaluating anything); otherwise at the
 * application's first `require(name)`, or when an `import` first loads a file of it. Nothing when
 * `name` is not installed. Returns the function that removes the wrappers it set.
 *
 * Wrappers of CommonJS's `Module.prototype.require` and `Module._load`, as OpenTelemetry's require
 * hook does, rather than a synchronous module hook (`module.registerHooks`): with a hook, every
 * later module resolution of the process takes the slower path through hooks (about 10 ms of CPU
 * for express's modules).
 */
export function onLoad(name: string, load: () => void): () => void {
  let entry: string;
  try {
    entry = require.resolve(name);
  } catch {
    return () => {};
  }
  if (require.cache[entry] !== undefined) {
    load();
    return () => {};
  }
  let pending = true;
  const run = () => {
    if (!pending) return;
    pending = false;
    load();
  };
  // `require(name)` is seen here first, before the require hooks of OpenTelemetry's
  // instrumentations (set up before this one, with tracing) begin to patch the package: ctxflow's
  // hooks are then in place when they do, and patch it after them, on top of their wrappers. From
  // inside their require, ctxflow's wrappers would come first and be undone.
  const proto = Module.prototype;
  const required = proto.require;
  const byName = (id: string) => id === name || id.startsWith(`${name}/`);
  const ours = function ctxflowRequire(this: Module, id: string): unknown {
    if (pending && byName(id)) run();
    return required.call(this, id);
  };
  proto.require = ours;
  // An ES module's `import` of the package's CommonJS files, by their path (any copy of the
  // package: a nested node_modules too, as OpenTelemetry's require hook matches by name).
  const directory = `/node_modules/${name}/`;
  const loaded = loader._load;
  const ourLoad = function ctxflowLoad(this: unknown, request: string, ...rest: unknown[]): unknown {
    if (pending && (byName(request) || request.replaceAll('\\', '/').includes(directory))) run();
    return loaded.call(this, request, ...rest);
  };
  loader._load = ourLoad;
  return () => {
    pending = false;
    // Under another hook's wrapper they stay, and do nothing more.
    if (proto.require === ours) proto.require = required;
    if (loader._load === ourLoad) loader._load = loaded;
  };
}
