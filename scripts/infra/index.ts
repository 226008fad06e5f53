/**
 * Local infrastructure for the integration tests, without Docker: one Kafka 3.9 process
 * (KRaft, broker and controller in one; kafka.ts), one Jaeger v2 with in-memory storage
 * (jaeger.ts) and, on demand, PostgreSQL (postgres.ts), both bound to 127.0.0.1 and detached (supervisor.ts), so they outlive the script.
 * cli.ts is `npm run infra`; scripts/test.ts imports this module.
 *
 * Downloads, builds, configs, data, logs and the state file live in
 * ${CTXFLOW_CACHE:-~/.cache/ctxflow}, never in the work tree.
 */
import fs from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  choosePorts,
  type InfraEnv,
  logTail,
  onPath,
  progress,
  runLayout,
  type Service,
  type ServiceDefinition,
  since,
} from './common.ts';
import { jaeger } from './jaeger.ts';
import { kafka, kafkaCluster } from './kafka.ts';
import { postgres } from './postgres.ts';
import {
  isOurs,
  pidsOf,
  type Running,
  readState,
  rssMegabytes,
  type State,
  startDetached,
  stop,
  stopProcess,
  updateState,
} from './supervisor.ts';

export {
  anyFreePort,
  cacheDir,
  DEFAULT_PORTS,
  type InfraEnv,
  onPath,
  type Ports,
  type Service,
} from './common.ts';
export { JAEGER_IMAGE, JAEGER_VERSION } from './jaeger.ts';
export { clusterSettings, KAFKA_IMAGE, KAFKA_VERSION, kafkaSettings } from './kafka.ts';

/** Every service `npm run infra` knows. */
export const SERVICES: readonly Service[] = ['kafka', 'jaeger', 'kafka-cluster', 'postgres'];
/** What `up` starts when no service is named: the three-broker cluster and PostgreSQL only on demand. */
export const DEFAULT_SERVICES: readonly Service[] = ['kafka', 'jaeger'];
const DEFINITIONS: Record<Service, ServiceDefinition> = {
  kafka,
  jaeger,
  'kafka-cluster': kafkaCluster,
  postgres,
};

function stateEnv(state: State): InfraEnv {
  return Object.assign(
    {},
    ...SERVICES.flatMap((s) => {
      const running = state[s];
      return running ? [DEFINITIONS[s].env(running.ports)] : [];
    }),
  );
}

export function formatEnv(env: InfraEnv): string {
  return Object.entries(env)
    .map(([key, value]) => `export ${key}=${value}`)
    .join('\n');
}

/** Tools needed to start `service`, given what is cached already, that are not on PATH. */
export function missingTools(service: Service): string[] {
  return DEFINITIONS[service].tools().filter((tool) => !onPath(tool));
}

async function waitReady(service: Service, running: Running): Promise<void> {
  const { probe, readyTimeoutMs } = DEFINITIONS[service];
  const deadline = performance.now() + readyTimeoutMs;
  while (!(await probe(running.ports))) {
    if (!pidsOf(running).every((pid) => isOurs(service, pid)))
      throw new Error(`${service} exited during startup`);
    if (performance.now() > deadline)
      throw new Error(`${service} not ready after ${readyTimeoutMs / 1000} s`);
    await sleep(250);
  }
}

/** Provisions (if needed), starts and waits for one service. Returns whether it was started now. */
async function upOne(service: Service): Promise<boolean> {
  const definition = DEFINITIONS[service];
  const paths = runLayout();
  const existing = readState()[service];
  if (existing && isOurs(service, existing.pid)) {
    await waitReady(service, existing);
    progress(`${service}: already running (pid ${existing.pid})`);
    return false;
  }
  const provisionStart = performance.now();
  await definition.provision();
  const provisioned = since(provisionStart);
  const ports = await choosePorts(definition.ports);
  const start = performance.now();
  fs.mkdirSync(paths.serviceDir(service), { recursive: true });
  fs.writeFileSync(paths.log(service), ''); // keep only the latest run's log
  const pids = await definition.start(ports);
  const pid = pids[0] as number;
  const running: Running = pids.length > 1 ? { pid, pids, ports } : { pid, ports };
  updateState(service, running);
  try {
    await waitReady(service, running);
  } catch (error) {
    process.stderr.write(`${logTail(paths.log(service))}\n`);
    await stop(service, running);
    throw new Error(`${(error as Error).message}; log: ${paths.log(service)}`);
  }
  progress(
    `${service}: provisioning ${provisioned}, up and ready in ${since(start)} (pid ${pids.join(', ')})`,
  );
  return true;
}

/**
 * Starts the services that are not running yet. Returns the endpoints of all requested
 * services and which of them this call started (the ones a caller should stop again).
 */
export async function up(
  services: readonly Service[] = DEFAULT_SERVICES,
): Promise<{ env: InfraEnv; started: Service[] }> {
  const start = performance.now();
  for (const service of services) {
    const missing = missingTools(service);
    if (missing.length > 0) throw new Error(`${service} needs ${missing.join(', ')} on PATH`);
  }
  // Both in parallel: the first Jaeger build takes minutes, Kafka need not wait for it.
  const results = await Promise.allSettled(services.map(upOne));
  const failed = results.flatMap((r) => (r.status === 'rejected' ? [r.reason as Error] : []));
  const started = services.filter((_, i) => results[i]?.status === 'fulfilled' && results[i].value);
  if (failed.length > 0) {
    await down(started);
    throw new Error(failed.map((e) => e.message).join('\n'));
  }
  progress(`up in ${since(start)}; state in ${runLayout().state}`);
  const state = readState();
  return { env: stateEnv(Object.fromEntries(services.map((s) => [s, state[s]]))), started };
}

/** Stops the given services if this script started them; leaves any other process alone. */
export async function down(services: readonly Service[] = SERVICES): Promise<void> {
  const state = readState();
  await Promise.all(
    services.map(async (service) => {
      const running = state[service];
      if (!running) return;
      if (!isOurs(service, running.pid)) {
        progress(`${service}: pid ${running.pid} is not our ${service} any more; forgetting it`);
        updateState(service, undefined);
        return;
      }
      const start = performance.now();
      await stop(service, running);
      progress(`${service}: stopped in ${since(start)}`);
    }),
  );
}

/** Prints one line per service; true when all of them are running and ready. */
export async function status(services: readonly Service[] = SERVICES): Promise<boolean> {
  const state = readState();
  let allReady = true;
  for (const service of services) {
    const running = state[service];
    if (!running || !isOurs(service, running.pid)) {
      allReady = false;
      console.log(`${service}: stopped`);
      continue;
    }
    const ready = await DEFINITIONS[service].probe(running.ports);
    allReady &&= ready;
    const env = Object.entries(DEFINITIONS[service].env(running.ports)).map(([k, v]) => `${k}=${v}`);
    const pids = pidsOf(running);
    const rss = pids.map((pid) => rssMegabytes(pid) ?? 0).reduce((a, b) => a + b, 0);
    console.log(
      `${service}: ${ready ? 'ready' : 'not ready'}, pid ${pids.join(', ')}, ${rss} MB resident, ${env.join(' ')}, log ${runLayout().log(service)}`,
    );
  }
  return allReady;
}

/** Running services that `up` does not start unless named (the cluster). */
export function runningExtras(): Service[] {
  const state = readState();
  return SERVICES.filter((s) => !DEFAULT_SERVICES.includes(s) && state[s] !== undefined);
}

/** Endpoints of the running services, for `eval "$(npm run -s infra -- env)"`. */
export function runningEnv(): InfraEnv {
  const state = readState();
  return stateEnv(
    Object.fromEntries(SERVICES.filter((s) => state[s] && isOurs(s, state[s].pid)).map((s) => [s, state[s]])),
  );
}

/**
 * Stops process `index` of a running service (node `index + 1` of the cluster), as a broker
 * failure would; returns a function that starts it again with the same command line and waits
 * until the whole service answers again.
 */
export async function stopNode(service: Service, index: number): Promise<() => Promise<void>> {
  const running = readState()[service];
  const pid = running === undefined ? undefined : pidsOf(running)[index];
  if (running === undefined || pid === undefined || !isOurs(service, pid))
    throw new Error(`${service}: no process ${index} of ours is running`);
  const [command, ...args] = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
  await stopProcess(service, pid);
  return async () => {
    const restarted = startDetached(service, command as string, args);
    const pids = [...pidsOf(running)];
    pids[index] = restarted;
    const updated: Running = { pid: pids[0] as number, pids, ports: running.ports };
    updateState(service, updated);
    await waitReady(service, updated);
  };
}
