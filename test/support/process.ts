/** Child processes for tests: a service started from a fixture file, read line by line as JSON. */
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';

/** A running fixture: its JSON stdout lines, and a way to wait for one and to stop it. */
export interface Service {
  readonly child: ChildProcessWithoutNullStreams;
  readonly lines: Record<string, unknown>[];
  /** Resolves with the first line (past or future) for which `match` is true; rejects after `timeoutMs`. */
  waitFor(
    match: (line: Record<string, unknown>) => boolean,
    timeoutMs?: number,
  ): Promise<Record<string, unknown>>;
  /** SIGTERM, then the exit. */
  stop(): Promise<void>;
  /** The last 4000 characters the process wrote to stderr. */
  stderr(): string;
}

/** Starts `node --conditions=ctxflow-source [nodeArgs] file` with `env` added to this process's. */
export function startService(file: string, env: Record<string, string>, nodeArgs: string[] = []): Service {
  const child = spawn(process.execPath, ['--conditions=ctxflow-source', ...nodeArgs, file], {
    env: { ...process.env, ...env },
    stdio: 'pipe',
  });
  const lines: Record<string, unknown>[] = [];
  const waiters = new Set<() => void>();
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => {
    stderr = (stderr + chunk.toString()).slice(-4000);
  });
  createInterface({ input: child.stdout }).on('line', (line) => {
    try {
      lines.push(JSON.parse(line) as Record<string, unknown>);
    } catch {
      lines.push({ text: line });
    }
    for (const wake of waiters) wake();
  });
  const exited = once(child, 'exit');
  return {
    child,
    lines,
    waitFor(match, timeoutMs = 15_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const found = lines.find(match);
          if (found === undefined) return false;
          clearTimeout(timer);
          waiters.delete(check);
          resolve(found);
          return true;
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`${file}: no matching line after ${timeoutMs} ms; stderr: ${stderr}`));
        }, timeoutMs);
        if (!check()) waiters.add(check);
        exited.then(() => {
          if (waiters.delete(check)) {
            clearTimeout(timer);
            reject(new Error(`${file} exited; stderr: ${stderr}`));
          }
        });
      });
    },
    stderr: () => stderr,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}
