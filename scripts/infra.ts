/**
 * Local infrastructure for the integration tests, without Docker: one Kafka 3.9 process
 * (KRaft, broker and controller in one) and one Jaeger v2 with in-memory storage, both bound
 * to 127.0.0.1 and detached, so they outlive this script.
 *
 *   npm run infra -- up|down|status|env [kafka|jaeger]
 *
 * Downloads, builds, configs, data, logs and the state file live in
 * ${CTXFLOW_CACHE:-~/.cache/ctxflow}, never in the work tree. scripts/test.ts imports this module.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Kafka, logLevel } from 'kafkajs';

export const KAFKA_VERSION = '3.9.1';
export const JAEGER_VERSION = '2.13.0';
// Jaeger v2.13.0 is published to the Go module proxy as v1.76.0 of the v1 module path.
const JAEGER_MODULE = 'github.com/jaegertracing/jaeger';
const JAEGER_MODULE_VERSION = 'v1.76.0';
// The images docker-compose.yml uses; test/compose.test.ts checks the two stay in step.
export const KAFKA_IMAGE = `apache/kafka:${KAFKA_VERSION}`;
export const JAEGER_IMAGE = `jaegertracing/jaeger:${JAEGER_VERSION}`;

export const DEFAULT_PORTS = {
  kafka: 9092,
  kafkaController: 9093,
  otlpHttp: 4318,
  jaegerQuery: 16686,
  jaegerQueryGrpc: 16685,
  jaegerHealth: 13133,
};
export type Ports = typeof DEFAULT_PORTS;
type PortName = keyof Ports;

// Setting one of these pins that port (and fails if it is taken); unset, the default is
// used when free and any free port otherwise.
const PORT_ENV: Record<PortName, string> = {
  kafka: 'CTXFLOW_KAFKA_PORT',
  kafkaController: 'CTXFLOW_KAFKA_CONTROLLER_PORT',
  otlpHttp: 'CTXFLOW_OTLP_HTTP_PORT',
  jaegerQuery: 'CTXFLOW_JAEGER_QUERY_PORT',
  jaegerQueryGrpc: 'CTXFLOW_JAEGER_QUERY_GRPC_PORT',
  jaegerHealth: 'CTXFLOW_JAEGER_HEALTH_PORT',
};

export type Service = 'kafka' | 'jaeger';
export const SERVICES: readonly Service[] = ['kafka', 'jaeger'];
const SERVICE_PORTS: Record<Service, PortName[]> = {
  kafka: ['kafka', 'kafkaController'],
  jaeger: ['otlpHttp', 'jaegerQuery', 'jaegerQueryGrpc', 'jaegerHealth'],
};

/** The variables the tests read (see test/support/infra.ts). */
export type InfraEnv = Partial<
  Record<'KAFKA_BROKERS' | 'JAEGER_URL' | 'OTEL_EXPORTER_OTLP_ENDPOINT', string>
>;

interface Running {
  pid: number;
  ports: Partial<Ports>;
}
type State = Partial<Record<Service, Running>>;

const HOST = '127.0.0.1';

// kafkajs 2.2.4 hands setTimeout negative delays (harmless: Node waits 1 ms instead) and Node
// prints a TimeoutNegativeWarning for them. Drop that warning; print the others as before.
const printWarning = process.listeners('warning');
process.removeAllListeners('warning');
process.on('warning', (warning) => {
  if (warning.name !== 'TimeoutNegativeWarning') for (const print of printWarning) print(warning);
});

export function cacheDir(): string {
  return process.env.CTXFLOW_CACHE || path.join(os.homedir(), '.cache', 'ctxflow');
}

function layout(cache = cacheDir()) {
  const run = path.join(cache, 'run');
  return {
    kafkaHome: path.join(cache, `kafka-${KAFKA_VERSION}`),
    kafkaLibs: path.join(cache, `kafka-${KAFKA_VERSION}`, 'libs'),
    jaegerSrc: path.join(cache, `jaeger-${JAEGER_VERSION}-build`),
    jaegerBin: path.join(cache, 'bin', `jaeger-${JAEGER_VERSION}`),
    run,
    state: path.join(run, 'state.json'),
    serviceDir: (service: Service) => path.join(run, service),
    log: (service: Service) => path.join(run, service, `${service}.log`),
    config: (service: Service) =>
      path.join(run, service, service === 'kafka' ? 'server.properties' : 'config.yaml'),
  };
}

/** Broker settings shared by the native broker and docker-compose.yml (checked by test/compose.test.ts). */
export function kafkaSettings(ports: Pick<Ports, 'kafka' | 'kafkaController'>): Record<string, string> {
  return {
    'process.roles': 'broker,controller',
    'node.id': '1',
    'controller.quorum.voters': `1@${HOST}:${ports.kafkaController}`,
    listeners: `PLAINTEXT://${HOST}:${ports.kafka},CONTROLLER://${HOST}:${ports.kafkaController}`,
    'advertised.listeners': `PLAINTEXT://${HOST}:${ports.kafka}`,
    'listener.security.protocol.map': 'PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT',
    'controller.listener.names': 'CONTROLLER',
    'inter.broker.listener.name': 'PLAINTEXT',
    'num.partitions': '1',
    'default.replication.factor': '1',
    'min.insync.replicas': '1',
    'offsets.topic.replication.factor': '1',
    'offsets.topic.num.partitions': '1',
    'transaction.state.log.replication.factor': '1',
    'transaction.state.log.min.isr': '1',
    'group.initial.rebalance.delay.ms': '0',
    'auto.create.topics.enable': 'true',
  };
}

function envFor(service: Service, ports: Partial<Ports>): InfraEnv {
  return service === 'kafka'
    ? { KAFKA_BROKERS: `${HOST}:${ports.kafka}` }
    : {
        JAEGER_URL: `http://${HOST}:${ports.jaegerQuery}`,
        OTEL_EXPORTER_OTLP_ENDPOINT: `http://${HOST}:${ports.otlpHttp}`,
      };
}

function stateEnv(state: State): InfraEnv {
  return Object.assign({}, ...SERVICES.flatMap((s) => (state[s] ? [envFor(s, state[s].ports)] : [])));
}

export function formatEnv(env: InfraEnv): string {
  return Object.entries(env)
    .map(([key, value]) => `export ${key}=${value}`)
    .join('\n');
}

/** Tools needed to start `service`, given what is cached already, that are not on PATH. */
export function missingTools(service: Service): string[] {
  const paths = layout();
  const needed =
    service === 'kafka'
      ? ['java', ...(fs.existsSync(paths.kafkaLibs) ? [] : ['mvn'])]
      : fs.existsSync(paths.jaegerBin)
        ? []
        : ['go'];
  return needed.filter((tool) => !onPath(tool));
}

export function onPath(tool: string): boolean {
  return (process.env.PATH ?? '').split(path.delimiter).some((dir) => {
    try {
      fs.accessSync(path.join(dir, tool), fs.constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

// Progress goes to stderr so that stdout carries only the `export` lines meant for eval.
function progress(message: string): void {
  process.stderr.write(`[infra] ${message}\n`);
}

function since(start: number): string {
  const seconds = (performance.now() - start) / 1000;
  return seconds < 60
    ? `${seconds.toFixed(1)} s`
    : `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
}

function readState(): State {
  try {
    return JSON.parse(fs.readFileSync(layout().state, 'utf8')) as State;
  } catch {
    return {};
  }
}

function updateState(service: Service, running: Running | undefined): void {
  const paths = layout();
  const state = readState();
  if (running) state[service] = running;
  else delete state[service];
  fs.mkdirSync(paths.run, { recursive: true });
  fs.writeFileSync(paths.state, `${JSON.stringify(state, null, 2)}\n`);
}

/**
 * Whether `pid` is still the process we started: its command line names our config file.
 * Guards against killing an unrelated process that reused the pid after ours exited.
 */
function isOurs(service: Service, pid: number): boolean {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').includes(layout().config(service));
  } catch {
    return false;
  }
}

function rssMegabytes(pid: number): number | undefined {
  try {
    const match = /^VmRSS:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match ? Math.round(Number(match[1]) / 1024) : undefined;
  } catch {
    return undefined;
  }
}

function logTail(file: string, lines = 40): string {
  try {
    return fs.readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

/** Runs a command to completion; its output is kept in `logFile` and returned. */
function run(command: string, args: string[], cwd: string, logFile: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let output = '';
    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
      stdout += chunk;
      output += chunk;
    });
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
      output += chunk;
    });
    child.on('error', reject);
    child.on('close', (code) => {
      fs.appendFileSync(logFile, `$ ${command} ${args.join(' ')}\n${output}`);
      if (code === 0) resolve(stdout);
      else
        reject(
          new Error(
            `${command} ${args.join(' ')} failed (exit ${code}); log ${logFile}:\n${logTail(logFile)}`,
          ),
        );
    });
  });
}

function isFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen(port, HOST, () => server.close(() => resolve(true)));
  });
}

function anyFreePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, HOST, () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

// Ports handed out during this run, so two services never get the same fallback port.
const chosenPorts = new Set<number>();

async function choosePorts(service: Service): Promise<Partial<Ports>> {
  const ports: Partial<Ports> = {};
  for (const name of SERVICE_PORTS[service]) {
    const pinned = process.env[PORT_ENV[name]];
    let port: number;
    if (pinned) {
      port = Number(pinned);
      if (!(await isFree(port)))
        throw new Error(`${PORT_ENV[name]}=${pinned}: port ${port} is in use on ${HOST}`);
    } else {
      port = DEFAULT_PORTS[name];
      while (chosenPorts.has(port) || !(await isFree(port))) port = await anyFreePort();
    }
    chosenPorts.add(port);
    ports[name] = port;
  }
  return ports;
}

async function provisionKafka(): Promise<void> {
  const paths = layout();
  if (fs.existsSync(paths.kafkaLibs)) return;
  const start = performance.now();
  progress(`kafka: downloading Kafka ${KAFKA_VERSION} jars from Maven Central into ${paths.kafkaHome}`);
  fs.mkdirSync(paths.kafkaHome, { recursive: true });
  // The server jar brings no logging backend and fails without log4j classes: add reload4j.
  fs.writeFileSync(
    path.join(paths.kafkaHome, 'pom.xml'),
    `<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.ctxflow</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>${KAFKA_VERSION}</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-reload4j</artifactId><version>1.7.36</version></dependency>
    <dependency><groupId>ch.qos.reload4j</groupId><artifactId>reload4j</artifactId><version>1.2.25</version></dependency>
  </dependencies>
</project>
`,
  );
  // Copy into a temporary directory and rename, so an interrupted download is never taken for a cached one.
  const partial = `${paths.kafkaLibs}.partial`;
  fs.rmSync(partial, { recursive: true, force: true });
  await run(
    'mvn',
    ['-q', '-B', 'dependency:copy-dependencies', `-DoutputDirectory=${partial}`],
    paths.kafkaHome,
    path.join(paths.kafkaHome, 'provision.log'),
  );
  fs.renameSync(partial, paths.kafkaLibs);
  progress(`kafka: ${fs.readdirSync(paths.kafkaLibs).length} jars downloaded in ${since(start)}`);
}

async function provisionJaeger(): Promise<void> {
  const paths = layout();
  if (fs.existsSync(paths.jaegerBin)) return;
  const start = performance.now();
  progress(
    `jaeger: building Jaeger ${JAEGER_VERSION} from source (once; 3 to 6 min on 2 cores) into ${paths.jaegerBin}`,
  );
  const src = paths.jaegerSrc;
  const logFile = path.join(src, 'provision.log');
  fs.mkdirSync(src, { recursive: true });
  // `go install ...@version` refuses modules with replace directives, so build from a wrapper
  // module that repeats Jaeger's replace and starts from Jaeger's own go.sum (without it,
  // checksum lookups fail for many of the collector's modules).
  fs.writeFileSync(
    path.join(src, 'go.mod'),
    `module ctxflow.local/jaeger\n\ngo 1.24.6\n\nreplace github.com/Shopify/sarama => github.com/Shopify/sarama v1.33.0\n`,
  );
  const module = `${JAEGER_MODULE}@${JAEGER_MODULE_VERSION}`;
  const { Dir } = JSON.parse(await run('go', ['mod', 'download', '-json', module], src, logFile)) as {
    Dir: string;
  };
  fs.copyFileSync(path.join(Dir, 'go.sum'), path.join(src, 'go.sum'));
  fs.chmodSync(path.join(src, 'go.sum'), 0o644); // the module cache is read-only
  await run('go', ['get', `${JAEGER_MODULE}/cmd/jaeger@${JAEGER_MODULE_VERSION}`], src, logFile);
  fs.mkdirSync(path.dirname(paths.jaegerBin), { recursive: true });
  const partial = `${paths.jaegerBin}.partial`;
  await run('go', ['build', '-o', partial, `${JAEGER_MODULE}/cmd/jaeger`], src, logFile);
  fs.renameSync(partial, paths.jaegerBin);
  progress(`jaeger: built in ${since(start)}`);
}

/** A Kafka cluster id, as `StorageTool random-uuid` prints it, without starting a JVM for it. */
function kafkaClusterId(): string {
  for (;;) {
    const id = randomBytes(16).toString('base64url');
    if (!id.startsWith('-')) return id; // Kafka rejects ids that look like a command-line flag
  }
}

const KAFKA_LOG4J = `log4j.rootLogger=WARN, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.server.BrokerServer=INFO
`;

async function startKafka(ports: Partial<Ports>): Promise<number> {
  const paths = layout();
  const dir = paths.serviceDir('kafka');
  const config = paths.config('kafka');
  const dataDir = path.join(dir, 'data');
  const log4j = path.join(dir, 'log4j.properties');
  const settings = { ...kafkaSettings(ports as Ports), 'log.dirs': dataDir };
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(
    config,
    `${Object.entries(settings)
      .map(([k, v]) => `${k}=${v}`)
      .join('\n')}\n`,
  );
  fs.writeFileSync(log4j, KAFKA_LOG4J);
  const java = ['-cp', `${paths.kafkaLibs}/*`, `-Dlog4j.configuration=file:${log4j}`];
  // Data is kept between runs (tests use unique topic names), so storage is formatted once.
  if (!fs.existsSync(path.join(dataDir, 'meta.properties'))) {
    const start = performance.now();
    await run(
      'java',
      [...java, 'kafka.tools.StorageTool', 'format', '-t', kafkaClusterId(), '-c', config],
      dir,
      paths.log('kafka'),
    );
    progress(`kafka: storage formatted in ${since(start)}`);
  }
  return startDetached('kafka', 'java', ['-Xmx512m', ...java, 'kafka.Kafka', config]);
}

function jaegerConfig(ports: Partial<Ports>): string {
  return `# Only what the tests need: OTLP over HTTP in, memory storage, the query API and a health check.
service:
  extensions: [jaeger_storage, jaeger_query, healthcheckv2]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 100000
  jaeger_query:
    # Otherwise it traces itself over OTLP/gRPC to 127.0.0.1:4317 whatever OTEL_TRACES_EXPORTER
    # says, logs errors when nothing listens there, and spends 10 s flushing on SIGTERM.
    enable_tracing: false
    storage:
      traces: memstore
    http:
      endpoint: ${HOST}:${ports.jaegerQuery}
    # Always served; without an endpoint it listens on all interfaces.
    grpc:
      endpoint: ${HOST}:${ports.jaegerQueryGrpc}
  healthcheckv2:
    use_v2: true
    http:
      endpoint: ${HOST}:${ports.jaegerHealth}
receivers:
  otlp:
    protocols:
      http:
        endpoint: ${HOST}:${ports.otlpHttp}
processors:
  batch:
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
`;
}

async function startJaeger(ports: Partial<Ports>): Promise<number> {
  const paths = layout();
  fs.mkdirSync(paths.serviceDir('jaeger'), { recursive: true });
  fs.writeFileSync(paths.config('jaeger'), jaegerConfig(ports));
  return startDetached('jaeger', paths.jaegerBin, ['--config', paths.config('jaeger')]);
}

/** Starts a process in its own process group with output to its log, and lets this script exit. */
function startDetached(service: Service, command: string, args: string[]): number {
  const paths = layout();
  const log = fs.openSync(paths.log(service), 'a');
  const child = spawn(command, args, {
    cwd: paths.serviceDir(service),
    detached: true,
    stdio: ['ignore', log, log],
  });
  fs.closeSync(log);
  if (child.pid === undefined) throw new Error(`${service}: could not start ${command}`);
  child.unref();
  return child.pid;
}

async function kafkaReady(ports: Partial<Ports>): Promise<boolean> {
  const admin = new Kafka({
    clientId: 'ctxflow-infra',
    brokers: [`${HOST}:${ports.kafka}`],
    logLevel: logLevel.NOTHING,
    connectionTimeout: 1000,
    retry: { retries: 0 },
  }).admin();
  try {
    await admin.connect();
    await admin.listTopics();
    return true;
  } catch {
    return false;
  } finally {
    await admin.disconnect().catch(() => {});
  }
}

async function jaegerReady(ports: Partial<Ports>): Promise<boolean> {
  try {
    const response = await fetch(`http://${HOST}:${ports.jaegerHealth}/status`, {
      signal: AbortSignal.timeout(1000),
    });
    return response.ok;
  } catch {
    return false;
  }
}

const READY: Record<Service, { probe: (ports: Partial<Ports>) => Promise<boolean>; timeoutMs: number }> = {
  kafka: { probe: kafkaReady, timeoutMs: 120_000 },
  jaeger: { probe: jaegerReady, timeoutMs: 30_000 },
};

async function waitReady(service: Service, running: Running): Promise<void> {
  const { probe, timeoutMs } = READY[service];
  const deadline = performance.now() + timeoutMs;
  while (!(await probe(running.ports))) {
    if (!isOurs(service, running.pid)) throw new Error(`${service} exited during startup`);
    if (performance.now() > deadline) throw new Error(`${service} not ready after ${timeoutMs / 1000} s`);
    await sleep(250);
  }
}

/** Provisions (if needed), starts and waits for one service. Returns whether it was started now. */
async function upOne(service: Service): Promise<boolean> {
  const existing = readState()[service];
  if (existing && isOurs(service, existing.pid)) {
    await waitReady(service, existing);
    progress(`${service}: already running (pid ${existing.pid})`);
    return false;
  }
  const provisionStart = performance.now();
  await (service === 'kafka' ? provisionKafka() : provisionJaeger());
  const provisioned = since(provisionStart);
  const ports = await choosePorts(service);
  const start = performance.now();
  fs.mkdirSync(layout().serviceDir(service), { recursive: true });
  fs.writeFileSync(layout().log(service), ''); // keep only the latest run's log
  const pid = await (service === 'kafka' ? startKafka(ports) : startJaeger(ports));
  const running = { pid, ports };
  updateState(service, running);
  try {
    await waitReady(service, running);
  } catch (error) {
    process.stderr.write(`${logTail(layout().log(service))}\n`);
    await stop(service, running);
    throw new Error(`${(error as Error).message}; log: ${layout().log(service)}`);
  }
  progress(`${service}: provisioning ${provisioned}, up and ready in ${since(start)} (pid ${pid})`);
  return true;
}

/**
 * Starts the services that are not running yet. Returns the endpoints of all requested
 * services and which of them this call started (the ones a caller should stop again).
 */
export async function up(
  services: readonly Service[] = SERVICES,
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
  progress(`up in ${since(start)}; state in ${layout().state}`);
  const state = readState();
  return { env: stateEnv(Object.fromEntries(services.map((s) => [s, state[s]]))), started };
}

async function stop(service: Service, running: Running): Promise<void> {
  if (isOurs(service, running.pid)) {
    process.kill(running.pid, 'SIGTERM');
    const deadline = performance.now() + 30_000;
    while (isOurs(service, running.pid) && performance.now() < deadline) await sleep(100);
    if (isOurs(service, running.pid)) process.kill(running.pid, 'SIGKILL');
  }
  updateState(service, undefined);
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
    const ready = await READY[service].probe(running.ports);
    allReady &&= ready;
    const env = Object.entries(envFor(service, running.ports)).map(([k, v]) => `${k}=${v}`);
    console.log(
      `${service}: ${ready ? 'ready' : 'not ready'}, pid ${running.pid}, ${rssMegabytes(running.pid)} MB resident, ${env.join(' ')}, log ${layout().log(service)}`,
    );
  }
  return allReady;
}

/** Endpoints of the running services, for `eval "$(npm run -s infra -- env)"`. */
export function runningEnv(): InfraEnv {
  const state = readState();
  return stateEnv(
    Object.fromEntries(SERVICES.filter((s) => state[s] && isOurs(s, state[s].pid)).map((s) => [s, state[s]])),
  );
}

async function main(args: string[]): Promise<number> {
  const [command, ...rest] = args;
  const services = rest.length > 0 ? rest : SERVICES;
  const unknown = services.filter((s) => !SERVICES.includes(s as Service));
  if (!command || !['up', 'down', 'status', 'env'].includes(command) || unknown.length > 0) {
    console.error('usage: npm run infra -- up|down|status|env [kafka|jaeger]...');
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

if (import.meta.main) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (error: Error) => {
      console.error(`[infra] ${error.message}`);
      process.exit(1);
    },
  );
}
