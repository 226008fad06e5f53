/**
 * `npm i ctxflow @opentelemetry/api` in an empty project, from the packed tarball: at most 10
 * packages and 3 MB, no install-script warning; the core and adapters load from it, and init()
 * without the OpenTelemetry SDK keeps deadlines and says in one line what tracing needs.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { install, installed, newProject, pack, run } from './support/consumer-project.ts';

const MAX_PACKAGES = 10;
const MAX_BYTES = 3 * 1024 * 1024;

let dir: string;
let npmOutput: string;

before(async () => {
  dir = newProject('ctxflow-light-');
  const { tarball } = await pack(dir);
  const manifest = JSON.parse(fs.readFileSync(path.join(import.meta.dirname, '..', 'package.json'), 'utf8'));
  npmOutput = await install(dir, [
    tarball,
    `@opentelemetry/api@${manifest.peerDependencies['@opentelemetry/api']}`,
  ]);
});

after(() => fs.rmSync(dir, { recursive: true, force: true }));

test(`npm i ctxflow @opentelemetry/api: at most ${MAX_PACKAGES} packages and 3 MB, no install scripts`, (t) => {
  const { packages, bytes } = installed(dir);
  t.diagnostic(`${packages.length} packages, ${(bytes / 1024 / 1024).toFixed(2)} MB: ${packages.join(', ')}`);
  assert.ok(packages.length <= MAX_PACKAGES, `${packages.length} packages: ${packages.join(', ')}`);
  assert.ok(bytes <= MAX_BYTES, `${bytes} bytes`);
  assert.doesNotMatch(npmOutput, /install-scripts|postinstall/);
  assert.ok(
    !packages.some((name) => name.startsWith('@opentelemetry/sdk')),
    'an OpenTelemetry SDK package came along',
  );
});

test('the core and the transport-free adapters load without the SDK; a deadline runs', async () => {
  // ctxflow/express, ctxflow/grpc and ctxflow/kafka need their transport, which a user of them has.
  const script = `
    import { background, current, run, withTimeout } from 'ctxflow';
    for (const entry of ['ctxflow/wire', 'ctxflow/http', 'ctxflow/fetch', 'ctxflow/resilience', 'ctxflow/health']) await import(entry);
    const ctx = withTimeout(background(), 50);
    await run(ctx, () => new Promise((resolve) => setTimeout(resolve, 80)));
    console.log(run(ctx, () => current().cause?.code));`;
  const { stdout, stderr } = await run(dir, process.execPath, ['--input-type=module', '-e', script]);
  assert.equal(stdout.trim(), 'deadline_exceeded');
  assert.equal(stderr, '');
});

test('init() without the SDK: deadlines and cancellation, and one line naming the packages for tracing', async () => {
  const script = `
    import { init } from 'ctxflow/init';
    import http from 'node:http';
    import { current } from 'ctxflow';
    const telemetry = init();
    const server = http.createServer((_req, res) => res.end(String(current().remaining() > 0 && current().remaining() <= 1000)));
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
    const answer = await fetch('http://127.0.0.1:' + server.address().port, { headers: { 'ctx-timeout': '1000' } });
    console.log(telemetry.tracing, await answer.text());
    server.close();
    await telemetry.shutdown();`;
  const traced = await run(dir, process.execPath, ['--input-type=module', '-e', script]);
  assert.equal(traced.stdout.trim(), 'false true');
  const lines = traced.stderr.trim().split('\n');
  assert.equal(lines.length, 1, traced.stderr);
  assert.match(
    lines[0] ?? '',
    /^ctxflow\/init: tracing is off \(packages not installed\): npm i @opentelemetry\/instrumentation .*@opentelemetry\/sdk-trace @opentelemetry\/resources @opentelemetry\/exporter-trace-otlp-http/,
  );
  const quiet = await run(dir, process.execPath, [
    '--input-type=module',
    '-e',
    script.replace('init()', 'init({ tracing: false })'),
  ]);
  assert.equal(quiet.stdout.trim(), 'false true');
  assert.equal(quiet.stderr, '');
});
