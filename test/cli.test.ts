/**
 * The CLI explains itself: help with a description, the default Jaeger URL and the variable that
 * sets it, examples and exit codes; `--version`; errors that name what was tried and what to do.
 * Needs no Jaeger: the unreachable case uses a loopback port nothing listens on.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';

const ROOT = path.join(import.meta.dirname, '..');
const CLI = path.join(ROOT, 'cli', 'ctxflow.ts');
const VERSION = (JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string })
  .version;

interface Outcome {
  code: number;
  stdout: string;
  stderr: string;
}

async function ctxflow(args: string[], env: NodeJS.ProcessEnv = {}): Promise<Outcome> {
  const { JAEGER_URL: _, ...rest } = process.env;
  try {
    const { stdout, stderr } = await promisify(execFile)(process.execPath, [CLI, ...args], {
      env: { ...rest, ...env },
      timeout: 30_000,
    });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const { code, stdout, stderr } = error as Outcome;
    return { code, stdout, stderr };
  }
}

/** A loopback port with nothing listening on it. */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

test('ctxflow --help describes the tool, its command and its exit codes', async () => {
  const { code, stdout } = await ctxflow(['--help']);
  assert.equal(code, 0);
  assert.match(stdout, /deadlines, cancellation and trace context/);
  assert.match(stdout, /ctxflow trace <traceId>/);
  assert.match(stdout, /ctxflow --help \| --version/);
  assert.match(stdout, /Exit codes:\n {2}0 .*\n {2}1 .*\n {2}2 /);
});

test('ctxflow trace --help gives the default Jaeger URL, the variable that sets it, and examples', async () => {
  const { code, stdout } = await ctxflow(['trace', '--help']);
  assert.equal(code, 0);
  assert.match(stdout, /--jaeger URL .*default: \$JAEGER_URL, else http:\/\/localhost:16686/);
  assert.match(stdout, /Examples:\n {2}ctxflow trace [0-9a-f]{32}/);
  assert.match(stdout, /Exit codes:/);
});

test('ctxflow --version prints the package version', async () => {
  assert.deepEqual(await ctxflow(['--version']), { code: 0, stdout: `${VERSION}\n`, stderr: '' });
});

test('an invalid trace id is named, with what a valid one looks like (exit 2)', async () => {
  const { code, stderr } = await ctxflow(['trace', 'not-an-id']);
  assert.equal(code, 2);
  assert.match(stderr, /'not-an-id' is not a trace id \(1 to 32 hexadecimal digits/);
  assert.match(stderr, /Run 'ctxflow trace --help'/);
});

test('an unknown command or option says so (exit 2)', async () => {
  assert.match((await ctxflow(['tarce', 'abc'])).stderr, /unknown command 'tarce'/);
  const option = await ctxflow(['trace', 'abc', '--jeager', 'x']);
  assert.equal(option.code, 2);
  assert.match(option.stderr, /Unknown option '--jeager'/);
});

test('Jaeger unreachable: the URL tried, where it came from, and what to do (exit 1)', async () => {
  const port = await closedPort();
  const flag = await ctxflow(['trace', 'abc123', '--jaeger', `http://127.0.0.1:${port}`]);
  assert.equal(flag.code, 1);
  assert.match(
    flag.stderr,
    new RegExp(`cannot reach http://127\\.0\\.0\\.1:${port}/api/traces/abc123 \\(ECONNREFUSED\\)`),
  );
  assert.match(flag.stderr, /\(from --jaeger\)\. Check that Jaeger runs there.*JAEGER_URL/);
  const env = await ctxflow(['trace', 'abc123'], { JAEGER_URL: `http://127.0.0.1:${port}` });
  assert.equal(env.code, 1);
  assert.match(env.stderr, /\(from JAEGER_URL\)/);
});
