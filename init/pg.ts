import {
  InstrumentationBase,
  type InstrumentationConfig,
  InstrumentationNodeModuleDefinition,
} from '@opentelemetry/instrumentation';
import type { ClientBase, Pool } from 'pg';
import { contextQuery, MANAGED, type QueryMethod } from '../adapters/pg/client.ts';
import { type ConnectMethod, contextConnect, contextPoolQuery } from '../adapters/pg/pool.ts';
import { loadThroughHooks, unwrapOnTop, wrapOnTop } from './wrap.ts';

interface PgModule {
  Client: { prototype: { query: QueryMethod } };
}
interface PgPoolModule {
  prototype: { connect: ConnectMethod; query: (...args: unknown[]) => unknown };
}

function managed(target: unknown): boolean {
  return (target as { [MANAGED]?: true })[MANAGED] === true;
}

/**
 * Gives every pg Client and Pool of an unchanged service what ctxflow/pg gives the ones it equips,
 * with the same code: `Client.prototype.query` runs under `current()` (refused once the context has
 * ended, bounded by `statement_timeout`, cancelled on the server when it ends), pg-pool's `connect`
 * waits only while the context lives and guards each checkout's release, and `Pool.prototype.query`
 * returns its client once the server is done with it. Registered after OpenTelemetry's pg
 * instrumentation, so that its wrappers sit under ours; pools and clients the adapter equipped pass through.
 */
export class PgContextInstrumentation extends InstrumentationBase<InstrumentationConfig> {
  constructor() {
    super('ctxflow-init-pg', '0.1.0', {});
    loadThroughHooks('pg');
  }

  protected init(): InstrumentationNodeModuleDefinition[] {
    const self = this;
    return [
      new InstrumentationNodeModuleDefinition(
        'pg',
        ['>=8 <9'],
        (exports: PgModule) => {
          wrapOnTop(
            exports.Client.prototype,
            'query',
            (original) =>
              function ctxflowQuery(this: ClientBase, ...args: unknown[]) {
                if (!self.isEnabled() || managed(this)) return original.apply(this, args);
                return contextQuery(this, original, args);
              },
          );
          return exports;
        },
        (exports: PgModule) => unwrapOnTop(exports.Client.prototype, 'query'),
      ),
      new InstrumentationNodeModuleDefinition(
        'pg-pool',
        ['>=3 <4'],
        (exports: PgPoolModule) => {
          wrapOnTop(
            exports.prototype,
            'connect',
            (original) =>
              function ctxflowConnect(this: Pool, callback?: Parameters<ConnectMethod>[0]) {
                if (!self.isEnabled() || managed(this)) return original.call(this, callback as never);
                return contextConnect(this, original, callback);
              },
          );
          wrapOnTop(
            exports.prototype,
            'query',
            (original) =>
              function ctxflowPoolQuery(this: Pool, ...args: unknown[]) {
                if (!self.isEnabled() || managed(this)) return original.apply(this, args);
                return contextPoolQuery(this, original, args);
              },
          );
          return exports;
        },
        (exports: PgPoolModule) => {
          unwrapOnTop(exports.prototype, 'connect');
          unwrapOnTop(exports.prototype, 'query');
        },
      ),
    ];
  }
}
