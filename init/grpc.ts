import { createRequire } from 'node:module';
import {
  InstrumentationBase,
  type InstrumentationConfig,
  InstrumentationNodeModuleDefinition,
} from '@opentelemetry/instrumentation';
import type { GrpcOptions } from './types.ts';
import { loadThroughHooks, unwrapOnTop, wrapOnTop } from './wrap.ts';

type Adapter = typeof import('../adapters/grpc/index.ts');
type Interceptor = ReturnType<Adapter['clientInterceptor']>;
type Transformer = ReturnType<Adapter['contextTransformer']>;
interface MethodDefinition {
  path: string;
  originalName?: string;
}
type Request = (...args: unknown[]) => unknown;
const REQUEST_METHODS = [
  'makeUnaryRequest',
  'makeClientStreamRequest',
  'makeServerStreamRequest',
  'makeBidiStreamRequest',
] as const;
interface GrpcModule {
  makeGenericClientConstructor: Request;
  makeClientConstructor: Request;
  loadPackageDefinition: Request;
  Client: { prototype: Record<(typeof REQUEST_METHODS)[number], Request> };
  Server: { prototype: { addService(service: object, implementation: object): void } };
}
// A client that has our interceptor already.
const EQUIPPED = Symbol('ctxflow.init.grpc');
// A server whose reset guard was raised already.
const GUARDED = Symbol('ctxflow.init.grpc.guard');

const VERSIONS = ['>=1.10.4 <2'];
// The adapter loads grpc-js itself: only load it once the application has (from this file's own
// folder, compiled `.js` or source `.ts`).
const ADAPTER = `../adapters/grpc/index${import.meta.url.endsWith('.ts') ? '.ts' : '.js'}`;

const require = createRequire(import.meta.url);

/**
 * Gives every grpc-js client and server ctxflow (adapters/grpc) as the application loads grpc-js:
 * client calls carry and obey the caller's context; server calls run in a context built from their
 * metadata, ended and answered as with `wrapService()`.
 */
export class GrpcContextInstrumentation extends InstrumentationBase<InstrumentationConfig & GrpcOptions> {
  #adapter: Adapter | undefined;
  #client: Interceptor | undefined;
  #clientTransformer: Transformer | undefined;

  constructor(options: GrpcOptions = {}) {
    super('ctxflow-init-grpc', '0.1.0', options);
    loadThroughHooks('@grpc/grpc-js');
  }

  #load(): Adapter {
    this.#adapter ??= require(ADAPTER) as Adapter;
    return this.#adapter;
  }

  /**
   * The implementation with its handlers bound to their calls' contexts by wrapService, which
   * builds each call's context itself: no interceptor; the `ignore`d methods' handlers as given.
   */
  #serve(service: object, implementation: object): object {
    const { budgetMs, ignore, resetGuard, ...rest } = this.getConfig();
    const handlers = implementation as Record<string, unknown>;
    const wrapped: Record<string, unknown> = this.#load().wrapService(handlers, { ...rest, budgetMs });
    if (ignore === undefined) return wrapped;
    for (const [key, method] of Object.entries(service as Record<string, MethodDefinition>)) {
      if (!ignore(method.path)) continue;
      // grpc-js finds a handler under the method's key or its original (proto) name.
      for (const name of [key, method.originalName]) {
        const handler = name === undefined ? undefined : handlers[name];
        if (name !== undefined && typeof handler === 'function') wrapped[name] = handler.bind(implementation);
      }
    }
    return wrapped;
  }

  #transformer(): Transformer {
    this.#clientTransformer ??= this.#load().contextTransformer(this.getConfig());
    return this.#clientTransformer;
  }

  /** Puts our client interceptor first in a client's own list (or provider list), once per client. */
  #equip(client: Record<symbol, unknown>): void {
    if (client[EQUIPPED] === true) return;
    client[EQUIPPED] = true;
    // grpc-js keeps a client's interceptors, then its interceptor providers, under private symbols,
    // in that order, as the first two arrays among its own symbol properties.
    const [interceptors, providers] = Object.getOwnPropertySymbols(client).filter((key) =>
      Array.isArray(client[key]),
    );
    if (interceptors === undefined || providers === undefined) return;
    this.#client ??= this.#load().clientInterceptor(this.getConfig());
    const ours = this.#client;
    if ((client[providers] as unknown[]).length > 0) {
      client[providers] = [() => ours, ...(client[providers] as unknown[])];
    } else {
      client[interceptors] = [ours, ...(client[interceptors] as unknown[])];
    }
  }

  /** A client class whose instances get ctxflow (its transformer, else its interceptor) when constructed. */
  #equipped(client: unknown): unknown {
    if (typeof client !== 'function') return client;
    const self = this;
    const Base = client as new (...args: unknown[]) => Record<symbol, unknown>;
    // Static members (`service`, `serviceName`) are inherited by the subclass.
    return class extends Base {
      constructor(...args: unknown[]) {
        // ctxflow's transformer, as with clientOptions(), unless the client has a transformer of
        // its own: then our interceptor, first in its list.
        const [address, credentials, options, ...rest] = args;
        const given = (options ?? {}) as { callInvocationTransformer?: unknown };
        const free = given.callInvocationTransformer === undefined;
        super(
          address,
          credentials,
          free ? { ...given, callInvocationTransformer: self.#transformer() } : given,
          ...rest,
        );
        if (free) this[EQUIPPED] = true;
        else self.#equip(this);
      }
    };
  }

  /** Replaces the client classes in a loaded package definition (nested namespaces) with equipped ones. */
  #equipAll(namespace: unknown, seen: Set<unknown>): void {
    if (typeof namespace !== 'object' || namespace === null || seen.has(namespace)) return;
    seen.add(namespace);
    const record = namespace as Record<string, unknown>;
    for (const [key, value] of Object.entries(record)) {
      if (typeof value === 'function' && 'service' in value) record[key] = this.#equipped(value);
      else this.#equipAll(value, seen);
    }
  }

  protected init(): InstrumentationNodeModuleDefinition {
    const self = this;
    const wrapRequest = (original: (...args: unknown[]) => unknown) =>
      function ctxflowRequest(this: Record<symbol, unknown>, ...args: unknown[]) {
        self.#equip(this);
        return original.apply(this, args);
      };
    return new InstrumentationNodeModuleDefinition(
      '@grpc/grpc-js',
      VERSIONS,
      (exports: GrpcModule) => {
        // Generated clients call the request methods grpc-js captured when it loaded: equip them
        // at construction; plain `Client` instances at their first call.
        // On top of instrumentation-grpc's wrappers of the same functions (its client spans), which
        // `_wrap` would undo.
        for (const method of REQUEST_METHODS) wrapOnTop(exports.Client.prototype, method, wrapRequest);
        for (const name of ['makeGenericClientConstructor', 'makeClientConstructor'] as const) {
          wrapOnTop(
            exports,
            name,
            (original) =>
              (...args: unknown[]) =>
                self.#equipped(original(...args)),
          );
        }
        wrapOnTop(exports, 'loadPackageDefinition', (original) => (...args: unknown[]) => {
          const loaded = original(...args);
          self.#equipAll(loaded, new Set());
          return loaded;
        });
        // Handlers are bound to their calls' contexts where they are registered: on top of
        // instrumentation-grpc's wrapper (its server span), and with no interceptor chain.
        this._wrap(exports.Server.prototype, 'addService', (original) => {
          return function ctxflowAddService(this: object, service: object, implementation: object) {
            const guard = self.getConfig().resetGuard;
            const server = this as { [GUARDED]?: true };
            if (guard !== false && server[GUARDED] !== true) {
              server[GUARDED] = true;
              self.#load().resetGuard(this as unknown as Parameters<Adapter['resetGuard']>[0], guard);
            }
            return original.call(this, service, self.#serve(service, implementation));
          };
        });
        return exports;
      },
      (exports: GrpcModule) => {
        for (const method of REQUEST_METHODS) unwrapOnTop(exports.Client.prototype, method);
        unwrapOnTop(exports, 'makeGenericClientConstructor');
        unwrapOnTop(exports, 'makeClientConstructor');
        unwrapOnTop(exports, 'loadPackageDefinition');
        this._unwrap(exports.Server.prototype, 'addService');
      },
    );
  }
}
