/**
 * What every service of the local infrastructure shares: the cache layout, ports, the
 * environment the tests read, and small process and logging helpers.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

/** Every service binds this address only. */
export const HOST = '127.0.0.1';

export const DEFAULT_PORTS = {
  kafka: 9092,
  kafkaController: 9093,
  otlpHttp: 4318,
  jaegerQuery: 16686,
  jaegerQueryGrpc: 16685,
  jaegerHealth: 13133,
  cluster1: 19092,
  cluster2: 19094,
  cluster3: 19096,
  clusterController1: 19093,
  clusterController2: 19095,
  clusterController3: 19097,
  postgres: 5432,
};
export type Ports = typeof DEFAULT_PORTS;
export type PortName = keyof Ports;

// Setting one of these pins that port (and fails if it is taken); unset, the default is
// used when free and any free port otherwise.
const PORT_ENV: Record<PortName, string> = {
  kafka: 'CTXFLOW_KAFKA_PORT',
  kafkaController: 'CTXFLOW_KAFKA_CONTROLLER_PORT',
  otlpHttp: 'CTXFLOW_OTLP_HTTP_PORT',
  jaegerQuery: 'CTXFLOW_JAEGER_QUERY_PORT',
  jaegerQueryGrpc: 'CTXFLOW_JAEGER_QUERY_GRPC_PORT',
  jaegerHealth: 'CTXFLOW_JAEGER_HEALTH_PORT',
  cluster1: 'CTXFLOW_KAFKA_CLUSTER_PORT_1',
  cluster2: 'CTXFLOW_KAFKA_CLUSTER_PORT_2',
  cluster3: 'CTXFLOW_KAFKA_CLUSTER_PORT_3',
  clusterController1: 'CTXFLOW_KAFKA_CLUSTER_CONTROLLER_PORT_1',
  clusterController2: 'CTXFLOW_KAFKA_CLUSTER_CONTROLLER_PORT_2',
  clusterController3: 'CTXFLOW_KAFKA_CLUSTER_CONTROLLER_PORT_3',
  postgres: 'CTXFLOW_POSTGRES_PORT',
};

export type Service = 'kafka' | 'jaeger' | 'kafka-cluster' | 'postgres';

/** The variables the tests read (see test/support/infra.ts). */
export type InfraEnv = Partial<
  Record<
    'KAFKA_BROKERS' | 'KAFKA_CLUSTER_BROKERS' | 'JAEGER_URL' | 'OTEL_EXPORTER_OTLP_ENDPOINT' | 'POSTGRES_URL',
    string
  >
>;

/** How the CLI and the supervisor drive one service. */
export interface ServiceDefinition {
  /** The ports it binds, chosen before it starts. */
  readonly ports: readonly PortName[];
  /** Tools needed to start it, given what is cached already. */
  tools(): string[];
  /** Downloads or builds what it runs, once per cache directory. */
  provision(): Promise<void>;
  /** Writes its config and starts it detached; returns its pid (one per process, for a cluster). */
  start(ports: Partial<Ports>): Promise<number[]>;
  /** Whether it answers on `ports`. */
  probe(ports: Partial<Ports>): Promise<boolean>;
  /** How long `up` waits for `probe` to succeed. */
  readonly readyTimeoutMs: number;
  /** The variables the tests read to reach it. */
  env(ports: Partial<Ports>): InfraEnv;
}

export function cacheDir(): string {
  return process.env.CTXFLOW_CACHE || path.join(os.homedir(), '.cache', 'ctxflow');
}

/** Where the state file and each service's config and log live. */
export function runLayout(cache = cacheDir()) {
  const run = path.join(cache, 'run');
  return {
    run,
    state: path.join(run, 'state.json'),
    serviceDir: (service: Service) => path.join(run, service),
    log: (service: Service) => path.join(run, service, `${service}.log`),
    config: (service: Service, node?: number) =>
      node === undefined
        ? path.join(run, service, service === 'jaeger' ? 'config.yaml' : 'server.properties')
        : path.join(run, service, `node-${node}`, 'server.properties'),
  };
}

/**
 * PostgreSQL's data directory. PostgreSQL refuses to run as root, so as root the server runs as the
 * `postgres` user, who cannot enter root's home: its data then lives beside the system's temporary
 * files, in a directory named after the cache directory it belongs to.
 */
export function postgresDataDir(cache = cacheDir()): string {
  if (process.getuid?.() !== 0) return path.join(runLayout(cache).serviceDir('postgres'), 'data');
  const id = createHash('sha256').update(cache).digest('hex').slice(0, 12);
  return path.join(os.tmpdir(), `ctxflow-postgres-${id}`, 'data');
}

/** A user to run a command as (uid and gid), for a server that refuses to run as root. */
export interface RunAs {
  readonly uid: number;
  readonly gid: number;
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

/** Progress goes to stderr so that stdout carries only the `export` lines meant for eval. */
export function progress(message: string): void {
  process.stderr.write(`[infra] ${message}\n`);
}

export function since(start: number): string {
  const seconds = (performance.now() - start) / 1000;
  return seconds < 60
    ? `${seconds.toFixed(1)} s`
    : `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
}

export function logTail(file: string, lines = 40): string {
  try {
    return fs.readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

/** Runs a command to completion; its output is kept in `logFile` and returned. */
export function runCommand(
  command: string,
  args: string[],
  cwd: string,
  logFile: string,
  user?: RunAs,
): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'], ...user });
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

/** A loopback port nothing listens on now. */
export function anyFreePort(): Promise<number> {
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

/** Picks a port for each name: the pinned one, else the default when free, else any free one. */
export async function choosePorts(names: readonly PortName[]): Promise<Partial<Ports>> {
  const ports: Partial<Ports> = {};
  for (const name of names) {
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
