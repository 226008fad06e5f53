/** Starts consumer worker processes (test/support/kafka-worker.ts) and collects what they report. */
import { type ChildProcess, spawn } from 'node:child_process';
import path from 'node:path';
import { createInterface } from 'node:readline';
import type { WorkerConfig, WorkerEvent } from './kafka-worker.ts';

const WORKER = path.join(import.meta.dirname, 'kafka-worker.ts');

/** A running worker process and every event it reported so far. */
export interface Worker {
  readonly index: number;
  readonly child: ChildProcess;
  readonly events: WorkerEvent[];
  /** The partitions of its latest assignment. */
  partitions: number[];
  exited: boolean;
}

/** Starts a worker (kafka-worker.ts unless another `script`), with `env` added to its environment (e.g. libfaketime's). */
export function startWorker(
  index: number,
  config: WorkerConfig | object,
  env: NodeJS.ProcessEnv = {},
  script = WORKER,
): Worker {
  const args = ['--disable-warning=TimeoutNegativeWarning', script, JSON.stringify(config)];
  const child = spawn(process.execPath, args, {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, ...env },
  });
  const worker: Worker = { index, child, events: [], partitions: [], exited: false };
  createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => {
    let event: WorkerEvent;
    try {
      event = JSON.parse(line) as WorkerEvent;
    } catch {
      return;
    }
    if (event.type === 'assigned') worker.partitions = event.partitions;
    worker.events.push(event);
  });
  child.on('exit', () => {
    worker.exited = true;
  });
  return worker;
}

/** Stops a worker: SIGTERM, then SIGKILL after 5 s. */
export async function stopWorker(worker: Worker): Promise<void> {
  if (worker.exited) return;
  const exited = new Promise<void>((resolve) => worker.child.once('exit', () => resolve()));
  worker.child.kill('SIGTERM');
  const timer = setTimeout(() => worker.child.kill('SIGKILL'), 5_000);
  await exited;
  clearTimeout(timer);
}
