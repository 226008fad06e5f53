import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { background, current, run, withTimeout } from 'ctxflow';
import { clientOptions, createServer, wrapService } from 'ctxflow/grpc';
import type { ProtoGrpcType } from './generated/inventory.js';
import type { InventoryHandlers } from './generated/shop/Inventory.js';
import type { Stock__Output } from './generated/shop/Stock.js';

// `defaults: true` as `proto-loader-gen-types --defaults`: fields never missing, as the types say.
const definition = protoLoader.loadSync(`${import.meta.dirname}/inventory.proto`, { defaults: true });
const shop = (grpc.loadPackageDefinition(definition) as unknown as ProtoGrpcType).shop;

const server = createServer(); // new grpc.Server() with a higher HTTP/2 reset limit (see below)
server.addService(
  shop.Inventory.service,
  wrapService<InventoryHandlers>(
    {
      // Runs in the call's context; the request and the answer are type-checked; errors become statuses.
      async GetStock(call) {
        return { sku: call.request.sku, count: 7, leftMs: current().remaining() };
      },
    },
    { budgetMs: 2_000 }, // each call's context: the caller's deadline, at most 2 s
  ),
);
const port = await new Promise<number>((resolve, reject) =>
  server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (error, bound) =>
    error ? reject(error) : resolve(bound),
  ),
);

// A client whose calls carry what is left of the caller's budget (grpc-timeout) and are cancelled with it.
const inventory = new shop.Inventory(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), clientOptions());
const stock = await run(
  withTimeout(background(), 500),
  () =>
    new Promise<Stock__Output | undefined>((resolve, reject) =>
      inventory.GetStock({ sku: '42' }, (error, answer) => (error ? reject(error) : resolve(answer))),
    ),
);
console.log(`sku ${stock?.sku}: ${stock?.count} in stock, the server had ${stock?.leftMs} ms of the 500`);
inventory.close();
server.forceShutdown();
