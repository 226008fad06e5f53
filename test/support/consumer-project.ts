/**
 * A user's project made from the packed package: `npm pack` of this repository, installed with npm
 * (its cache, a bounded time) into a new directory, as `npm i ctxflow ...` would.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

const exec = promisify(execFile);
export const ROOT = path.join(import.meta.dirname, '..', '..');
export const NPM = process.platform === 'win32' ? 'npm.cmd' : 'npm';
/** This Node first on the PATH, so that npm and its scripts run on it. */
const PATH = `${path.dirname(process.execPath)}${path.delimiter}${process.env.PATH}`;

/** Runs `command` in `cwd` with this Node first on the PATH; rejects on a non-zero exit or after `timeout` ms. */
export function run(
  cwd: string,
  command: string,
  args: string[],
  timeout = 180_000,
  env: NodeJS.ProcessEnv = {},
) {
  return exec(command, args, { cwd, timeout, env: { ...process.env, PATH, ...env }, maxBuffer: 16 << 20 });
}

/**
 * Packs the repository into `dir` (building dist/ through `prepack`); the tarball's path and file
 * list. One pack at a time: each rebuilds dist/ from scratch, and node --test runs two test files
 * at once, so a second pack would delete the files the first is archiving.
 */
export async function pack(dir: string): Promise<{ tarball: string; files: string[] }> {
  return withPackLock(async () => {
    const { stdout } = await run(ROOT, NPM, ['pack', '--json', '--pack-destination', dir]);
    const [packed] = JSON.parse(stdout) as { filename: string; files: { path: string }[] }[];
    if (packed === undefined) throw new Error('npm pack printed nothing');
    return { tarball: path.join(dir, packed.filename), files: packed.files.map((file) => file.path) };
  });
}

const PACK_LOCK = path.join(ROOT, 'node_modules', '.cache', 'ctxflow-pack.lock');
// Longer than any pack takes: a lock this old was left by a run that was killed.
const STALE_LOCK_MS = 300_000;

/** Runs `fn` holding a lock across processes (a directory: creating one is atomic). */
async function withPackLock<T>(fn: () => Promise<T>): Promise<T> {
  fs.mkdirSync(path.dirname(PACK_LOCK), { recursive: true });
  for (;;) {
    try {
      fs.mkdirSync(PACK_LOCK);
      break;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    const since = fs.statSync(PACK_LOCK, { throwIfNoEntry: false })?.mtimeMs;
    if (since !== undefined && Date.now() - since > STALE_LOCK_MS)
      fs.rmSync(PACK_LOCK, { recursive: true, force: true });
    else await new Promise((resolve) => setTimeout(resolve, 200));
  }
  try {
    return await fn();
  } finally {
    fs.rmSync(PACK_LOCK, { recursive: true, force: true });
  }
}

/** A new empty project directory with a package.json (ES modules unless `type` says otherwise). */
export function newProject(prefix: string, type: 'module' | 'commonjs' = 'module'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type }));
  return dir;
}

/** `npm install` of `specs` in `dir`, from npm's cache when it can; npm's output (warnings included). */
export async function install(dir: string, specs: string[]): Promise<string> {
  const { stdout, stderr } = await run(dir, NPM, [
    'install',
    '--prefer-offline',
    '--no-audit',
    '--no-fund',
    ...specs,
  ]);
  return `${stdout}${stderr}`;
}

/** The packages installed in `dir` and their total size in bytes (files as stored, apparent size). */
export function installed(dir: string): { packages: string[]; bytes: number } {
  const lock = JSON.parse(fs.readFileSync(path.join(dir, 'node_modules', '.package-lock.json'), 'utf8')) as {
    packages: Record<string, unknown>;
  };
  const packages = Object.keys(lock.packages).map((key) => key.replace(/^.*node_modules\//, ''));
  let bytes = 0;
  const walk = (at: string) => {
    for (const entry of fs.readdirSync(at, { withFileTypes: true })) {
      const full = path.join(at, entry.name);
      if (entry.isDirectory()) walk(full);
      else if (entry.isFile()) bytes += fs.statSync(full).size;
    }
  };
  walk(path.join(dir, 'node_modules'));
  return { packages, bytes };
}
