/**
 * The layering rules, checked on the sources: sdk/ is the core and imports no adapter and no
 * transport; an adapter (a folder of adapters/) imports no other adapter; nothing in the library
 * imports tests, benchmarks, scripts or examples.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';

const ROOT = path.join(import.meta.dirname, '..');
const TRANSPORTS = [
  'node:http',
  'node:https',
  'node:http2',
  'node:net',
  '@grpc/grpc-js',
  'express',
  'kafkajs',
  'undici',
];
const OUTSIDE_LIBRARY = ['test', 'bench', 'scripts', 'examples'];
const SPECIFIER =
  /(?:^|\n)\s*(?:import|export)\b[^'";]*?from\s*['"]([^'"]+)['"]|\bimport\(\s*['"]([^'"]+)['"]\s*\)/g;

/** The module specifiers a source imports or re-exports. */
function specifiers(source: string): string[] {
  return [...source.matchAll(SPECIFIER)].map((match) => (match[1] ?? match[2]) as string);
}

/** The rule a library file's import breaks, or undefined. `file` and the result are relative to the root. */
function violation(file: string, specifier: string): string | undefined {
  const [area, adapter] = file.split('/');
  if (!specifier.startsWith('.')) {
    const transport = TRANSPORTS.find((t) => specifier === t || specifier.startsWith(`${t}/`));
    return area === 'sdk' && transport !== undefined ? `sdk/ imports the transport ${transport}` : undefined;
  }
  const target = path.relative(ROOT, path.resolve(ROOT, path.dirname(file), specifier)).split(path.sep);
  if (OUTSIDE_LIBRARY.includes(target[0] as string)) return `the library imports ${target.join('/')}`;
  if (area === 'sdk' && target[0] === 'adapters') return `sdk/ imports ${target.join('/')}`;
  if (area === 'adapters' && target[0] === 'adapters' && target[1] !== adapter) {
    return `adapters/${adapter} imports another adapter, ${target.join('/')}`;
  }
  return undefined;
}

function libraryFiles(): string[] {
  return fs
    .globSync(['sdk/**/*.ts', 'adapters/**/*.ts', 'cli/**/*.ts'], { cwd: ROOT })
    .filter((file) => !file.endsWith('.test.ts'))
    .map((file) => file.split(path.sep).join('/'));
}

test('no library file breaks the layering', () => {
  const files = libraryFiles();
  assert.ok(files.length > 10, `found ${files.length} library files`);
  const broken = files.flatMap((file) =>
    specifiers(fs.readFileSync(path.join(ROOT, file), 'utf8'))
      .map((specifier) => violation(file, specifier))
      .filter((message) => message !== undefined)
      .map((message) => `${file}: ${message}`),
  );
  assert.deepEqual(broken, []);
});

test('the checker catches each kind of violation', () => {
  assert.match(violation('sdk/context.ts', '../adapters/http/fetch.ts') ?? '', /sdk\/ imports adapters/);
  assert.match(violation('sdk/context.ts', 'node:http') ?? '', /transport node:http/);
  assert.match(violation('sdk/context.ts', '@grpc/grpc-js') ?? '', /transport @grpc\/grpc-js/);
  assert.match(violation('adapters/grpc/client.ts', '../http/fetch.ts') ?? '', /another adapter/);
  assert.match(violation('adapters/http/fetch.ts', '../../test/support/http.ts') ?? '', /imports test/);
  assert.match(violation('sdk/wire.ts', '../bench/support/stats.ts') ?? '', /imports bench/);
  assert.equal(violation('adapters/http/express.ts', './server.ts'), undefined);
  assert.equal(violation('adapters/grpc/client.ts', '../../sdk/wire.ts'), undefined);
  assert.equal(violation('adapters/grpc/client.ts', '@grpc/grpc-js'), undefined);
  assert.deepEqual(
    specifiers("import a from 'x';\nexport { b } from \"./y.ts\";\nconst c = await import('z');"),
    ['x', './y.ts', 'z'],
  );
});
