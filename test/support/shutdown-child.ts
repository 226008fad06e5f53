/**
 * A process for the signal test: opts in to SIGTERM, holds one unit of work that ends 150 ms
 * later and one that would run for a minute, prints `ready`, and prints what happens to each.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { shutdown } from '../../sdk/resilience/index.ts';

const print = (event: object) => process.stdout.write(`${JSON.stringify(event)}\n`);
const coordinator = shutdown({ grace: 400, settleMs: 200, signals: ['SIGTERM'] });
coordinator.onDrain(() => print({ drain: coordinator.inFlight }));

process.once('SIGTERM', () => {
  coordinator.execute(() => 'late').catch((error: Error) => print({ refused: error.name }));
});
void coordinator.execute(async () => {
  await sleep(150);
  print({ short: 'finished' });
});
void coordinator.execute((ctx) =>
  sleep(60_000, undefined, { signal: ctx.signal }).catch(() => print({ long: ctx.cause?.code })),
);
print({ ready: true });
