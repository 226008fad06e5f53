/** The inventory service's gRPC definition: JSON messages, so the example needs no .proto. */
import * as grpc from '@grpc/grpc-js';

export interface StockRequest {
  sku: string;
  mode?: string;
}
export interface Stock {
  sku: string;
  reserved: boolean;
}

const json = {
  requestStream: false,
  responseStream: false,
  requestSerialize: (value: unknown) => Buffer.from(JSON.stringify(value)),
  requestDeserialize: (bytes: Buffer) => JSON.parse(bytes.toString()),
  responseSerialize: (value: unknown) => Buffer.from(JSON.stringify(value)),
  responseDeserialize: (bytes: Buffer) => JSON.parse(bytes.toString()),
};

export const InventoryService = {
  reserve: { path: '/shop.Inventory/Reserve', ...json },
  confirm: { path: '/shop.Inventory/Confirm', ...json },
} satisfies grpc.ServiceDefinition;

export interface InventoryHandlers extends grpc.UntypedServiceImplementation {
  reserve: grpc.handleUnaryCall<StockRequest, Stock>;
  confirm: grpc.handleUnaryCall<StockRequest, Stock>;
}

export type InventoryClient = grpc.Client & {
  reserve(request: StockRequest, callback: grpc.requestCallback<Stock>): grpc.ClientUnaryCall;
  confirm(request: StockRequest, callback: grpc.requestCallback<Stock>): grpc.ClientUnaryCall;
};
export const InventoryClient = grpc.makeGenericClientConstructor(
  InventoryService,
  'Inventory',
) as unknown as new (
  address: string,
  credentials: grpc.ChannelCredentials,
) => InventoryClient;
