/**
 * Server processes for the benches: the load generator pinned to core 0, the servers to core 1
 * (taskset, with 2+ cores), each server reporting its port over IPC once it listens.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { availableParallelism } from 'node:os';

/** Cores of this machine, for the reports. */
export const CORES = availableParallelism();
/** True when this process and its servers are pinned to separate cores. */
export const pinned = CORES >= 2 && spawnSync('taskset', ['-V']).status === 0;
if (pinned) spawnSync('taskset', ['-a', '-cp', '0', String(process.pid)], { stdio: 'ignore' });

/** A bench server process and the port it listens on. */
export interface BenchServer {
  readonly child: ChildProcess;
  readonly port: number;
}

/** Starts `node args` (on core 1 when pinned) with `env`; resolves with the port it sends over IPC. */
export function startServer(args: string[], env: NodeJS.ProcessEnv, label: string): Promise<BenchServer> {
  const node = process.execPath;
  const [command, argv] = pinned ? ['taskset', ['-c', '1', node, ...args]] : [node, args];
  const child = spawn(command as string, argv as string[], {
    env: { ...process.env, NODE_ENV: 'production', ...env },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`${label} exited with ${code}`)));
    child.once('message', (message: { port: number }) => resolve({ child, port: message.port }));
  });
}

/** Asks a server how many spans it has exported (and dropped). */
export function spanCount(server: BenchServer): Promise<number> {
  return new Promise((resolve) => {
    server.child.once('message', (message: { spans: number }) => resolve(message.spans));
    server.child.send({ type: 'spans' });
  });
}
