/**
 * The test runner: `npm test [-- <path filter>... <node --test option>...]`; with `--unit`
 * (`npm run test:unit`), only the tests that need neither Kafka, Jaeger, PostgreSQL nor Go.
 *
 * Runs `node --test` on sdk/, adapters/ and test/. Tests get their endpoints from
 * kafkaBrokers(t) and jaeger(t) (test/support/infra.ts); when a selected test file calls one and
 * its variables are not set, the service is started for this run (scripts/infra/) and stopped
 * afterwards. Positional arguments keep only the test files whose path contains one of them;
 * options (`--name=value` form) go to node --test.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { UNAVAILABLE_ENV } from '../test/support/infra.ts';
import { down, missingTools, SERVICES, type Service, up } from './infra/index.ts';

const USES: Record<Service, { call: RegExp; env: string[] }> = {
  kafka: { call: /\bkafkaBrokers\(/, env: ['KAFKA_BROKERS'] },
  jaeger: { call: /\bjaeger\(/, env: ['JAEGER_URL', 'OTEL_EXPORTER_OTLP_ENDPOINT'] },
  'kafka-cluster': { call: /\bkafkaCluster(Alone)?\(/, env: ['KAFKA_CLUSTER_BROKERS'] },
  postgres: { call: /\bpostgres\(t/, env: ['POSTGRES_URL'] },
};

// Tests that build the grpc-go peer need Go: they are not unit tests.
const NEEDS_GO = /\bgoPeer\(/;

const args = process.argv.slice(2);
const unitOnly = args.includes('--unit');
const filters = args.filter((arg) => !arg.startsWith('-')).map((arg) => path.normalize(arg));
const options = args.filter((arg) => arg.startsWith('-') && arg !== '--unit');

const files = fs
  .globSync(['sdk/**/*.test.ts', 'adapters/**/*.test.ts', 'test/**/*.test.ts'])
  .filter((file) => filters.length === 0 || filters.some((filter) => file.includes(filter)))
  .filter((file) => !unitOnly || !needsInfrastructure(fs.readFileSync(file, 'utf8')))
  .sort();
if (files.length === 0) {
  console.error(`no test files match ${filters.join(' ')}`);
  process.exit(1);
}

/** True when a test file's source calls for Kafka, Jaeger or the Go peer. */
function needsInfrastructure(source: string): boolean {
  return NEEDS_GO.test(source) || SERVICES.some((service) => USES[service].call.test(source));
}

const sources = files.map((file) => fs.readFileSync(file, 'utf8'));
const wanted = SERVICES.filter(
  (s) =>
    USES[s].env.some((name) => !process.env[name]) && sources.some((source) => USES[s].call.test(source)),
);
const startable: Service[] = [];
for (const service of wanted) {
  const missing = missingTools(service);
  if (missing.length === 0) {
    startable.push(service);
    continue;
  }
  const reason = `${service} not started: ${missing.join(', ')} not found on PATH`;
  process.env[UNAVAILABLE_ENV[service]] = reason;
  console.error(
    `${reason}; tests that need it ${process.env.CI === 'true' ? 'will fail (CI=true)' : 'are skipped'}`,
  );
}

let started: Service[] = [];
if (startable.length > 0) {
  try {
    const infra = await up(startable);
    started = infra.started;
    Object.assign(process.env, infra.env);
  } catch (error) {
    console.error(`[infra] ${(error as Error).message}`);
    process.exit(1);
  }
}

const code = await new Promise<number>((resolve) => {
  const child = spawn(
    process.execPath,
    [
      // kafkajs schedules negative timeouts (harmless; Node clamps them to 1 ms) and Node warns about each.
      '--disable-warning=TimeoutNegativeWarning',
      '--test',
      '--test-concurrency=2',
      '--test-timeout=120000',
      ...options,
      ...files,
    ],
    { stdio: 'inherit' },
  );
  // Stay alive until the tests end, so the infrastructure is stopped: Ctrl-C reaches the tests
  // from the terminal already, a SIGTERM is passed on.
  process.on('SIGINT', () => {});
  process.on('SIGTERM', () => child.kill('SIGTERM'));
  child.on('exit', (exitCode, signal) => resolve(exitCode ?? (signal ? 1 : 0)));
});

if (started.length > 0) await down(started);
process.exit(code);
