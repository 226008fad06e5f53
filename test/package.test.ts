/**
 * The package as a user installs it: `npm pack`, the tarball installed into a new project, every
 * entry point imported from ESM and required from CommonJS, and a consumer type-checked under
 * `module: nodenext` and `module: commonjs` (node10 resolution, TypeScript 5).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { pack } from './support/consumer-project.ts';

const exec = promisify(execFile);
const ROOT = path.join(import.meta.dirname, '..');
const manifest = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
const ENTRIES = Object.keys(manifest.exports)
  .filter((key) => key !== './package.json')
  .map((key) => (key === '.' ? 'ctxflow' : `ctxflow/${key.slice(2)}`));
const NPM = process.platform === 'win32' ? 'npm.cmd' : 'npm';

let dir: string;
let tarball: string;

/** Runs `command` in the consumer project with this Node first on the PATH. */
function run(command: string, args: string[], timeout = 120_000) {
  const PATH = `${path.dirname(process.execPath)}${path.delimiter}${process.env.PATH}`;
  return exec(command, args, { cwd: dir, timeout, env: { ...process.env, PATH }, maxBuffer: 16 << 20 });
}

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ctxflow-consumer-'));
  const packed = await pack(dir);
  tarball = packed.tarball;
  const shipped = new Set(packed.files);
  // Every file the exports point at is in the tarball.
  for (const target of Object.values(manifest.exports).flatMap((value) =>
    typeof value === 'string' ? [value] : Object.values(value as Record<string, string>),
  )) {
    assert.ok(shipped.has(target.slice(2)), `exports point at ${target}, which npm pack does not ship`);
  }
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: 'consumer', private: true }));
  await run(NPM, [
    'install',
    '--prefer-offline',
    '--no-audit',
    '--no-fund',
    tarball,
    `@opentelemetry/api@${manifest.devDependencies['@opentelemetry/api']}`,
    `express@${manifest.devDependencies.express}`,
    `@types/express@${manifest.devDependencies['@types/express']}`,
    `@grpc/grpc-js@${manifest.devDependencies['@grpc/grpc-js']}`,
    `@types/node@${manifest.devDependencies['@types/node']}`,
    'typescript@5',
  ]);
});

after(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('the packed package, installed', () => {
  test('every entry point imports from ESM and has exports', async () => {
    const script = ENTRIES.map((entry) => `Object.keys(await import('${entry}')).length`).join(',');
    const { stdout } = await run(process.execPath, [
      '--input-type=module',
      '-e',
      `console.log(JSON.stringify([${script}]))`,
    ]);
    const counts = JSON.parse(stdout) as number[];
    assert.equal(counts.length, ENTRIES.length);
    for (const [i, count] of counts.entries()) assert.ok(count > 0, `${ENTRIES[i]} exports nothing`);
  });

  test('every entry point requires from CommonJS', async () => {
    const script = ENTRIES.map((entry) => `Object.keys(require('${entry}')).length`).join(',');
    const { stdout } = await run(process.execPath, [
      '--input-type=commonjs',
      '-e',
      `console.log(JSON.stringify([${script}]))`,
    ]);
    assert.deepEqual(
      (JSON.parse(stdout) as number[]).map((count) => count > 0),
      ENTRIES.map(() => true),
    );
  });

  test('a consumer type-checks under module nodenext and module commonjs', async () => {
    const consumer = [
      "import { current, withTimeout, DeadlineExceededError, isContextDoneError, type Context } from 'ctxflow';",
      "import { acceptInbound, startOutbound, TIMEOUT_HEADER } from 'ctxflow/wire';",
      "import { deadlines, errorHandler } from 'ctxflow/express';",
      "import { fetch } from 'ctxflow/fetch';",
      "import { request, withDeadlines } from 'ctxflow/http';",
      "import { clientOptions, serverInterceptor, wrapService } from 'ctxflow/grpc';",
      "import { init } from 'ctxflow/init';",
      'const ctx: Context = withTimeout(current(), 100);',
      'const left: number = ctx.remaining();',
      'const middleware = [deadlines({ budgetMs: 2_000 }), errorHandler()];',
      'const parts = [fetch, request, withDeadlines, clientOptions, serverInterceptor, wrapService, acceptInbound, startOutbound, TIMEOUT_HEADER.length, init];',
      'export const used = [left, middleware, parts, isContextDoneError(new DeadlineExceededError({ code: "deadline_exceeded" }))];',
    ].join('\n');
    fs.writeFileSync(path.join(dir, 'consumer.ts'), consumer);
    const base = { strict: true, noEmit: true, skipLibCheck: false, target: 'es2022', types: ['node'] };
    const configs = {
      'tsconfig.nodenext.json': { ...base, module: 'nodenext', moduleResolution: 'nodenext' },
      'tsconfig.commonjs.json': {
        ...base,
        module: 'commonjs',
        moduleResolution: 'node10',
        esModuleInterop: true,
      },
    };
    for (const [name, compilerOptions] of Object.entries(configs)) {
      fs.writeFileSync(path.join(dir, name), JSON.stringify({ compilerOptions, files: ['consumer.ts'] }));
      const tsc = path.join(dir, 'node_modules', 'typescript', 'bin', 'tsc');
      const result = await run(process.execPath, [tsc, '-p', name]).catch(
        (error: { stdout: string }) => error,
      );
      assert.equal((result as { stdout: string }).stdout.trim(), '', `${name}: tsc reported errors`);
    }
  });
});
