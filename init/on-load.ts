/**
 * When the application loads a package: init() sets up its gRPC and Kafka hooks (and loads
 * OpenTelemetry's module patching they are built on) only for the transports the application
 * actually loads, not for every one that happens to be installed.
 */
import { createRequire, Module, type ModuleHooks, registerHooks } from 'node:module';

const require = createRequire(import.meta.url);

/**
 * Calls `load` once, just before the application gets package `name`: at once when the package is
 * in the CommonJS cache already (required, or being linked by a static import of the module that
 * runs init(): the ES module loader puts it there before evaluating anything); otherwise at the
 * application's first `require(name)`, or when an `import` first resolves to a file of it (a
 * synchronous module hook, in-thread). Nothing when `name` is not installed. Returns the function
 * that removes the hooks.
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
  let hooks: ModuleHooks | undefined;
  const run = () => {
    if (hooks === undefined) return;
    hooks.deregister();
    hooks = undefined;
    load();
  };
  // Any copy of the package (a nested node_modules too), as OpenTelemetry's require hook matches
  // by name; the query is import-in-the-middle's, when its loader hook runs before this one.
  const directory = `/node_modules/${name}/`;
  hooks = registerHooks({
    resolve(specifier, context, nextResolve) {
      const resolved = nextResolve(specifier, context);
      if (resolved.url.startsWith('file:') && resolved.url.includes(directory)) run();
      return resolved;
    },
  });
  // `require(name)` is seen here first, before the require hooks of OpenTelemetry's
  // instrumentations (set up before this one, with tracing) begin to patch the package: ctxflow's
  // hooks are then in place when they do, and patch it after them, on top of their wrappers. From
  // the module hook, inside their require, ctxflow's wrappers would come first and be undone.
  const proto = Module.prototype;
  const required = proto.require;
  const ours = function ctxflowRequire(this: Module, id: string): unknown {
    if (hooks !== undefined && (id === name || id.startsWith(`${name}/`))) run();
    return required.call(this, id);
  };
  proto.require = ours;
  return () => {
    hooks?.deregister();
    hooks = undefined;
    // Under another hook's wrapper it stays, and does nothing more.
    if (proto.require === ours) proto.require = required;
  };
}
