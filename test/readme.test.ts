/**
 * The README's TypeScript blocks, type-checked against the package as a user's code would be
 * (`ctxflow/...` resolves to this package's sources). The modules the examples import from the
 * user's own code (`./db.ts`, `./config.ts`, generated gRPC types) are given here.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';

const ROOT = path.join(import.meta.dirname, '..');
const DIR = path.join(ROOT, '.cache', `readme-${process.pid}`);

/** The user's own modules that README examples import. */
const SUPPORT: Record<string, string> = {
  'db.ts': `export const sql = 'select price from prices where sku = $1';
export const db = {
  query: async (_sql: string, _params: unknown[], _options: { signal?: AbortSignal }): Promise<unknown[]> => [],
};
`,
  'config.ts': `export const INVENTORY = 'http://127.0.0.1:8081';
export const PRICING_ADDR = '127.0.0.1:50051';
`,
  'generated/inventory.ts': `import * as grpc from '@grpc/grpc-js';
export interface StockRequest { sku: string }
export interface Stock { sku: string; price: number; leftMs: number }
export interface PriceRequest { sku: string }
export interface Price { cents: number }
export interface InventoryHandlers extends grpc.UntypedServiceImplementation {
  getStock: grpc.handleUnaryCall<StockRequest, Stock>;
}
export const InventoryService = {} as grpc.ServiceDefinition<InventoryHandlers>;
export interface PricingClient extends grpc.Client {
  getPrice(request: PriceRequest, callback: grpc.requestCallback<Price>): grpc.ClientUnaryCall;
}
export const PricingClient = grpc.makeGenericClientConstructor({}, 'Pricing') as unknown as new (
  address: string,
  credentials: grpc.ChannelCredentials,
  options?: grpc.ClientOptions,
) => PricingClient;
`,
};

/** A handler answering the wrong type: the compiler must refuse it, or the check proves nothing. */
const WRONG = `import { wrapService } from 'ctxflow/grpc';
import type { InventoryHandlers } from './generated/inventory.ts';
export const wrong = wrapService<InventoryHandlers>({ getStock: async (call) => ({ sku: call.request.sku, price: 'free' }) });
`;

function blocks(markdown: string): string[] {
  return [...markdown.matchAll(/^```ts\n([\s\S]*?)^```$/gm)].map((match) => match[1] as string);
}

async function typecheck(files: string[]): Promise<string> {
  const config = {
    extends: path.relative(DIR, path.join(ROOT, 'tsconfig.json')),
    compilerOptions: { noEmit: true, noUnusedLocals: false },
    include: [],
    files,
  };
  fs.writeFileSync(path.join(DIR, 'tsconfig.json'), JSON.stringify(config));
  const tsc = path.join(ROOT, 'node_modules', '.bin', 'tsc');
  const result = await promisify(execFile)(tsc, ['-p', DIR], { timeout: 120_000 }).catch(
    (error: { stdout: string }) => error,
  );
  return result.stdout.trim();
}

before(() => {
  for (const [file, source] of Object.entries(SUPPORT)) {
    fs.mkdirSync(path.dirname(path.join(DIR, file)), { recursive: true });
    fs.writeFileSync(path.join(DIR, file), source);
  }
});

after(() => fs.rmSync(DIR, { recursive: true, force: true }));

test("every TypeScript block of the README type-checks under the project's strict settings", async () => {
  const sources = blocks(fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8'));
  assert.ok(sources.length >= 5, `found ${sources.length} blocks`);
  const files = sources.map((source, i) => {
    const file = `block-${i + 1}.ts`;
    // Each block is a module of its own, as in a user's project.
    fs.writeFileSync(path.join(DIR, file), source.includes('export ') ? source : `${source}\nexport {};\n`);
    return file;
  });
  assert.equal(await typecheck(files), '');
});

test('a gRPC handler answering the wrong type does not compile', async () => {
  fs.writeFileSync(path.join(DIR, 'wrong.ts'), WRONG);
  assert.match(await typecheck(['wrong.ts']), /wrong\.ts.*error TS/);
});
