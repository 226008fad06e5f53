import { type ChannelListener, subscribe, unsubscribe } from 'node:diagnostics_channel';
import type { ClientRequest, IncomingMessage, ServerResponse } from 'node:http';
import { context as otel } from '@opentelemetry/api';
import { requestContexts, type ServerOptions } from '../adapters/http/server.ts';
import { current } from '../sdk/index.ts';
import {
  isTracingSuppressed,
  type OutboundHeaders,
  type OutboundOptions,
  type OutboundSetter,
  startOutbound,
  TIMEOUT_HEADER,
} from '../sdk/wire.ts';

/** What `init()` does on node:http and node:https servers (express, fastify, koa and plain http). */
export interface HttpServerOptions extends Omit<ServerOptions, 'budgetMs' | 'trustInbound'> {
  /**
   * This service's own budget per request in milliseconds, or a function of the request giving it
   * (per route, per listener: `req.url`, `req.socket.localPort`); undefined means none.
   */
  budgetMs?: number | ((req: IncomingMessage) => number | undefined);
  /**
   * Honour the caller's deadline headers: a boolean, or a function of the request (an edge
   * listener answers false). Default true.
   */
  trustInbound?: boolean | ((req: IncomingMessage) => boolean);
  /** Requests for which ctxflow does nothing (health checks, long polls); default none. */
  ignore?: (req: IncomingMessage) => boolean;
}

/** What `init()` does on outbound node:http/https requests and on fetch/undici. */
export interface HttpClientOptions extends OutboundOptions {}

type Listener = (this: unknown, req: IncomingMessage, res: ServerResponse) => void;
type Accept = ReturnType<typeof requestContexts>;
type Wrapped = Listener & { listener?: Listener };
type AddListener = (this: unknown, event: string | symbol, listener: (...args: never[]) => void) => unknown;

const METHODS = ['on', 'addListener', 'prependListener'] as const;
// Not `import http from 'node:http'`: the ES module facade of node:http reads every export, its
// lazy WebSocket getters too, which loads Node's bundled undici (about 40 ms at start-up).
const http = process.getBuiltinModule('node:http');
// The prototype http.Server and https.Server both inherit from: patching https.Server's own would
// load node:https and node:tls (about 7 ms) for every service, HTTPS or not.
const prototypes = [process.getBuiltinModule('node:net').Server.prototype] as unknown as Record<
  string,
  AddListener
>[];

/** An HTTP or HTTPS server (not HTTP/2, whose compatibility 'request' event ctxflow leaves alone). */
function servesHttp(server: unknown): boolean {
  if (server instanceof http.Server) return true;
  // Only TLS and HTTP/2 servers get here with a 'request' listener: node:https is loaded already
  // when this one is an https.Server.
  return server instanceof process.getBuiltinModule('node:https').Server;
}
const saved = new Map<Record<string, AddListener>, Record<string, AddListener | undefined>>();

/**
 * Wraps the 'request' listeners of every node:http and node:https server created from now on (and
 * listeners added later to existing ones) with the request contexts of the node:http adapter
 * (`requestContexts`, the core of `withDeadlines` and express's `deadlines()`).
 * Listeners, not `Server#emit`: they run inside whatever wraps emit (instrumentation-http's server
 * span), in either order of set-up. Returns the function that undoes it.
 */
export function patchHttpServers(options: HttpServerOptions): () => void {
  const { budgetMs, trustInbound, ignore, ...rest } = options;
  // Made once, not per request: one for trusted callers and, when asked for, one for the others;
  // a budget given as a function is the request's own, passed to them.
  const fixedBudget = typeof budgetMs === 'function' ? undefined : budgetMs;
  const budgetOf = typeof budgetMs === 'function' ? budgetMs : () => fixedBudget;
  const accepts = new Map<boolean, Accept>();
  const acceptFor = (req: IncomingMessage): Accept => {
    const trusted = typeof trustInbound === 'function' ? trustInbound(req) : (trustInbound ?? true);
    let accept = accepts.get(trusted);
    if (accept === undefined) {
      accept = requestContexts({ ...rest, budgetMs: fixedBudget, trustInbound: trusted });
      accepts.set(trusted, accept);
    }
    return accept;
  };

  const wrap = (listener: Listener): Wrapped => {
    const wrapped: Wrapped = function ctxflowRequest(this: unknown, req, res) {
      if (ignore?.(req) === true) {
        listener.call(this, req, res);
        return;
      }
      // A request a second listener (or another layer) has accepted already is only narrowed.
      const otelContext = acceptFor(req)(req, res, budgetOf(req));
      // Undefined: shed on arrival, answered 504 already.
      // A closure, not otel.with's thisArg: that calls listener.bind, and an express app's `bind`
      // is the route method for HTTP's BIND.
      if (otelContext !== undefined) otel.with(otelContext, () => listener.call(this, req, res));
    };
    // EventEmitter#removeListener matches `listener.listener` too (as for once()).
    wrapped.listener = listener;
    return wrapped;
  };

  for (const proto of prototypes) {
    const originals: Record<string, AddListener | undefined> = {};
    for (const method of METHODS) {
      const own = Object.hasOwn(proto, method) ? proto[method] : undefined;
      originals[method] = own;
      const original = proto[method] as AddListener;
      proto[method] = function (this: unknown, event, listener) {
        const patched = event === 'request' && typeof listener === 'function' && servesHttp(this);
        return original.call(
          this,
          event,
          patched ? (wrap(listener as unknown as Listener) as never) : listener,
        );
      };
    }
    saved.set(proto, originals);
  }
  return () => {
    for (const [proto, originals] of saved) {
      for (const method of METHODS) {
        const original = originals[method];
        if (original === undefined) delete proto[method];
        else proto[method] = original;
      }
    }
    saved.clear();
  };
}

const CREATED = 'http.client.request.created';
const TRACEPARENT = 'traceparent';

/**
 * The headers ctxflow still has to write when an instrumentation injected the global propagator's
 * already (ours among them: the budget too), so that the propagators do not run twice per request.
 */
export function written(budget: boolean, trace: boolean): OutboundHeaders {
  return budget ? 'none' : trace ? 'budget' : 'all';
}

/** Sets a header unless the caller or an instrumentation (with ctxflow's propagator) already did. */
const requestSetter: OutboundSetter<ClientRequest> = {
  set: (carrier, key, value) => {
    if (!carrier.hasHeader(key)) carrier.setHeader(key, value);
  },
  get: (carrier, key) => carrier.getHeader(key) as string | string[] | undefined,
};

/**
 * Makes every outbound node:http/https request carry the trace and the remaining budget of
 * `current()`, and destroys it with the context's error when the context ends first (at once when
 * it has already ended). Uses the `http.client.request.created` diagnostics channel (Node >= 22.14),
 * published before the headers go out, in the caller's async context.
 */
export function watchHttpClients(options: HttpClientOptions): () => void {
  const onCreated: ChannelListener = (message) => {
    // The SDK's own exports (run with tracing suppressed) belong to no request, whatever context they inherit.
    if (isTracingSuppressed(otel.active())) return;
    const request = (message as { request: ClientRequest }).request;
    let unlink: () => void;
    try {
      unlink = startOutbound({
        ctx: current(),
        carrier: request,
        setter: requestSetter,
        abort: (error) => request.destroy(error),
        options,
        headers: written(request.hasHeader(TIMEOUT_HEADER), request.hasHeader(TRACEPARENT)),
      });
    } catch (error) {
      // The context has ended: nothing may be sent.
      request.destroy(error as Error);
      return;
    }
    request.once('close', unlink);
  };
  subscribe(CREATED, onCreated);
  return () => unsubscribe(CREATED, onCreated);
}
