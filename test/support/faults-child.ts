/**
 * A process for the fault-hook tests: installs the hooks, faults inside two request contexts
 * (a throw in a timer, a rejected promise nobody handles), prints one JSON line per event, then,
 * when given `outside`, faults outside any request, which must end the process.
 */
import { background, newContext } from '../../sdk/context.ts';
import { installFaultHooks } from '../../sdk/resilience/index.ts';

const print = (event: object) => process.stdout.write(`${JSON.stringify(event)}\n`);

installFaultHooks({
  log: (message, error) => print({ log: message, error: String(error) }),
  exit: (error) => {
    print({ exit: String(error) });
    process.exit(1);
  },
});

const thrower = newContext(background(), Date.now() + 10_000, 'a'.repeat(32));
thrower.onDone((error) => print({ ended: 'thrower', cause: error.cause }));
thrower.run(() => {
  setTimeout(() => {
    throw new Error('boom in a timer');
  }, 1);
});

const rejecter = newContext(background(), Date.now() + 10_000, 'b'.repeat(32));
rejecter.onDone((error) => print({ ended: 'rejecter', cause: error.cause }));
rejecter.run(async () => {
  await new Promise((resolve) => setTimeout(resolve, 20));
  Promise.reject(new Error('lost rejection'));
});

setTimeout(() => {
  print({ alive: true });
  if (process.argv.includes('outside')) {
    setTimeout(() => {
      throw new Error('boom at startup');
    }, 1);
  }
}, 100);
