/**
 * PostgreSQL from the machine's own server binaries (Debian's `postgresql` package: .ci/run installs
 * it when missing), one cluster initialised once, bound to 127.0.0.1, trust authentication.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import {
  HOST,
  type Ports,
  postgresDataDir,
  progress,
  type RunAs,
  runCommand,
  runLayout,
  type ServiceDefinition,
  since,
} from './common.ts';
import { startDetached } from './supervisor.ts';

/** The user and database the tests connect as. */
export const POSTGRES_USER = 'postgres';

/**
 * Server settings, passed on the command line. Enough connections for the leak test and the bench
 * beside the other tests; durability off, as befits throwaway test data.
 */
export const POSTGRES_SETTINGS: Readonly<Record<string, string>> = {
  listen_addresses: HOST,
  unix_socket_directories: '',
  max_connections: '300',
  shared_buffers: '32MB',
  fsync: 'off',
  synchronous_commit: 'off',
  full_page_writes: 'off',
  log_min_messages: 'warning',
};

/** The directory holding `postgres` and `initdb`: on the PATH, else Debian's newest version. */
function binDir(): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (fs.existsSync(path.join(dir, 'postgres')) && fs.existsSync(path.join(dir, 'initdb'))) return dir;
  }
  const debian = '/usr/lib/postgresql';
  const versions = fs.existsSync(debian)
    ? fs
        .readdirSync(debian)
        .filter((v) => fs.existsSync(path.join(debian, v, 'bin', 'postgres')))
        .sort((a, b) => Number(b) - Number(a))
    : [];
  return versions[0] === undefined ? undefined : path.join(debian, versions[0], 'bin');
}

/** As root, the `postgres` system user the server runs as (PostgreSQL refuses root). */
function runAs(): RunAs | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const id = (flag: string) => Number(execFileSync('id', [flag, POSTGRES_USER], { encoding: 'utf8' }).trim());
  return { uid: id('-u'), gid: id('-g') };
}

async function provision(): Promise<void> {
  const data = postgresDataDir();
  if (fs.existsSync(path.join(data, 'PG_VERSION'))) return;
  const start = performance.now();
  const bin = binDir() as string;
  const user = runAs();
  const logFile = path.join(runLayout().serviceDir('postgres'), 'provision.log');
  fs.mkdirSync(path.dirname(logFile), { recursive: true });
  fs.rmSync(data, { recursive: true, force: true });
  fs.mkdirSync(data, { recursive: true, mode: 0o700 });
  if (user !== undefined) {
    fs.chownSync(path.dirname(data), user.uid, user.gid);
    fs.chownSync(data, user.uid, user.gid);
  }
  progress(`postgres: initialising a cluster in ${data}`);
  await runCommand(
    path.join(bin, 'initdb'),
    ['-D', data, '-U', POSTGRES_USER, '--auth=trust', '--encoding=UTF8', '--locale=C', '--no-sync'],
    path.dirname(data),
    logFile,
    user,
  );
  progress(`postgres: initialised in ${since(start)}`);
}

async function start(ports: Partial<Ports>): Promise<number[]> {
  const data = postgresDataDir();
  const settings = { ...POSTGRES_SETTINGS, port: String(ports.postgres) };
  const args = ['-D', data, ...Object.entries(settings).flatMap(([k, v]) => ['-c', `${k}=${v}`])];
  const user = runAs();
  const bin = path.join(binDir() as string, 'postgres');
  return [
    startDetached(
      'postgres',
      bin,
      args,
      runLayout().log('postgres'),
      user && { ...user, cwd: path.dirname(data) },
    ),
  ];
}

function url(ports: Partial<Ports>): string {
  return `postgres://${POSTGRES_USER}@${HOST}:${ports.postgres}/${POSTGRES_USER}`;
}

async function probe(ports: Partial<Ports>): Promise<boolean> {
  const client = new pg.Client({ connectionString: url(ports), connectionTimeoutMillis: 1000 });
  client.on('error', () => {});
  try {
    await client.connect();
    await client.query('select 1');
    return true;
  } catch {
    return false;
  } finally {
    await client.end().catch(() => {});
  }
}

/** The PostgreSQL service: ready when `select 1` answers. */
export const postgres: ServiceDefinition = {
  ports: ['postgres'],
  tools: () => (binDir() === undefined ? ['postgres', 'initdb'] : []),
  provision,
  start,
  probe,
  readyTimeoutMs: 30_000,
  env: (ports) => ({ POSTGRES_URL: url(ports) }),
};
