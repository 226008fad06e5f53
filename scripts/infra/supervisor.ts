/**
 * The process supervisor: starts services detached, records their pid and ports in the state
 * file, and stops only processes it can prove are still the ones it started.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { type Ports, postgresDataDir, type RunAs, runLayout, type Service } from './common.ts';

/** A service this script started: its pid and the ports it was given. */
export interface Running {
  pid: number;
  /** Every process of a service that runs several (a cluster), `pid` first. */
  pids?: number[];
  ports: Partial<Ports>;
}

/** The processes of a running service. */
export function pidsOf(running: Running): number[] {
  return running.pids ?? [running.pid];
}
/** The state file: the running services. */
export type State = Partial<Record<Service, Running>>;

export function readState(): State {
  try {
    return JSON.parse(fs.readFileSync(runLayout().state, 'utf8')) as State;
  } catch {
    return {};
  }
}

export function updateState(service: Service, running: Running | undefined): void {
  const paths = runLayout();
  const state = readState();
  if (running) state[service] = running;
  else delete state[service];
  fs.mkdirSync(paths.run, { recursive: true });
  fs.writeFileSync(paths.state, `${JSON.stringify(state, null, 2)}\n`);
}

/**
 * Whether `pid` is still a process we started: its command line names a config file in the
 * service's directory (PostgreSQL: our data directory). Guards against killing an unrelated process
 * that reused the pid.
 */
export function isOurs(service: Service, pid: number): boolean {
  const dir = `${runLayout().serviceDir(service)}${path.sep}`;
  const dataDir = service === 'postgres' ? postgresDataDir() : undefined;
  try {
    return fs
      .readFileSync(`/proc/${pid}/cmdline`, 'utf8')
      .split('\0')
      .some(
        (arg) =>
          arg === dataDir || (arg.startsWith(dir) && (arg.endsWith('.properties') || arg.endsWith('.yaml'))),
      );
  } catch {
    return false;
  }
}

export function rssMegabytes(pid: number): number | undefined {
  try {
    const match = /^VmRSS:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match ? Math.round(Number(match[1]) / 1024) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Starts a process in its own process group with output to its log, and lets this script exit;
 * `user` runs it as another user (from `cwd`, a directory that user can enter).
 */
export function startDetached(
  service: Service,
  command: string,
  args: string[],
  logFile = runLayout().log(service),
  user?: RunAs & { cwd: string },
): number {
  const paths = runLayout();
  const log = fs.openSync(logFile, 'a');
  const child = spawn(command, args, {
    cwd: paths.serviceDir(service),
    detached: true,
    stdio: ['ignore', log, log],
    ...user,
  });
  fs.closeSync(log);
  if (child.pid === undefined) throw new Error(`${service}: could not start ${command}`);
  child.unref();
  return child.pid;
}

/**
 * SIGTERM to one process of ours (PostgreSQL: SIGINT, its fast shutdown; SIGTERM would wait for
 * every session to end), then SIGKILL after 30 s.
 */
export async function stopProcess(service: Service, pid: number): Promise<void> {
  if (!isOurs(service, pid)) return;
  process.kill(pid, service === 'postgres' ? 'SIGINT' : 'SIGTERM');
  const deadline = performance.now() + 30_000;
  while (isOurs(service, pid) && performance.now() < deadline) await sleep(100);
  if (isOurs(service, pid)) process.kill(pid, 'SIGKILL');
}

/** Stops every process of the service and forgets it. */
export async function stop(service: Service, running: Running): Promise<void> {
  await Promise.all(pidsOf(running).map((pid) => stopProcess(service, pid)));
  updateState(service, undefined);
}
