/** The PostgreSQL adapter's own instrument (docs/metrics.md). */
import type { CauseCode } from '../../sdk/index.ts';
import { adapterInstruments, metricCause } from '../../sdk/wire.ts';

/**
 * Where a database call ended with its context: waiting for a pooled connection (`pool_wait`),
 * before anything was sent (`not_sent`), or running on the server, which was told to cancel it (`query`).
 */
export type DbStage = 'pool_wait' | 'not_sent' | 'query';

const instruments = adapterInstruments((meter) => ({
  ended: meter.createCounter('ctxflow.db.ended', {
    description:
      'Database calls ended by their context: pool waits given up, queries not sent or cancelled on the server, by cause',
    unit: '{call}',
  }),
}));

/** Counts a database call ended by its context (`ctxflow.db.ended`), by database system, stage and cause. */
export function countDbEnded(system: string, stage: DbStage, cause: CauseCode): void {
  instruments().ended.add(1, {
    'db.system.name': system,
    'ctxflow.db.stage': stage,
    'ctxflow.cause': metricCause(cause),
  });
}
