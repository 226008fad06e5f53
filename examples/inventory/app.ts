import * as grpc from '@grpc/grpc-js';
import { listening, log, work } from '../log.ts';
import { type InventoryHandlers, InventoryService, type Stock } from './service.ts';

/** Both methods take 20 ms, or 2 s in the demo's slow modes; both stop when the call's context ends. */
const handle =
  (slowIn: string): InventoryHandlers['reserve'] =>
  (call, callback) => {
    log('arrived', { method: slowIn });
    work(call.request.mode === slowIn ? 2_000 : 20).then(
      () => callback(null, { sku: call.request.sku, reserved: true } satisfies Stock),
      (error: Error) => callback(error),
    );
  };

const server = new grpc.Server();
server.addService(InventoryService, {
  reserve: handle('slow-inventory'),
  confirm: handle('slow-shipping'),
} satisfies InventoryHandlers);
server.bindAsync(
  `127.0.0.1:${process.env.PORT ?? 0}`,
  grpc.ServerCredentials.createInsecure(),
  (error, port) => {
    if (error) throw error;
    listening(port);
  },
);
