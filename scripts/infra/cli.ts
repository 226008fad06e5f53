/**
 * `npm run infra -- up|down|status|env [kafka|jaeger|kafka-cluster|postgres]...`: starts, stops, reports on and prints
 * the endpoints of the local test infrastructure (see index.ts and docs/infra.md).
 */
import {
  DEFAULT_SERVICES,
  down,
  formatEnv,
  runningEnv,
  runningExtras,
  SERVICES,
  type Service,
  status,
  up,
} from './index.ts';

async function main(args: string[]): Promise<number> {
  const [command, ...rest] = args;
  // Unnamed, the cluster counts only when it runs: `status` must not fail for want of it.
  const services =
    rest.length > 0 ? rest : command === 'up' ? DEFAULT_SERVICES : [...DEFAULT_SERVICES, ...runningExtras()];
  const unknown = services.filter((s) => !SERVICES.includes(s as Service));
  if (!command || !['up', 'down', 'status', 'env'].includes(command) || unknown.length > 0) {
    console.error('usage: npm run infra -- up|down|status|env [kafka|jaeger|kafka-cluster|postgres]...');
    return 2;
  }
  const selected = services as Service[];
  switch (command) {
    case 'up':
      console.log(formatEnv((await up(selected)).env));
      return 0;
    case 'down':
      await down(selected);
      return 0;
    case 'status':
      return (await status(selected)) ? 0 : 1;
    default:
      console.log(formatEnv(runningEnv()));
      return 0;
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: Error) => {
    console.error(`[infra] ${error.message}`);
    process.exit(1);
  },
);
