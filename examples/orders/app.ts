import type { AddressInfo } from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { errorHandler } from 'ctxflow/express';
import { cancelBus, producer } from 'ctxflow/kafka';
import express from 'express';
import { Kafka, logLevel } from 'kafkajs';
import { InventoryClient } from '../inventory/service.ts';
import { listening, log } from '../log.ts';

const kafka = new Kafka({
  brokers: (process.env.KAFKA_BROKERS ?? '127.0.0.1:9092').split(','),
  logLevel: logLevel.NOTHING,
});
const bus = cancelBus(kafka); // when a request that produced messages is cancelled, every worker hears it
const orders = producer(kafka.producer(), { cancelBus: bus });
await orders.connect();
const inventory = new InventoryClient(
  process.env.INVENTORY_ADDR ?? '127.0.0.1:50051',
  grpc.credentials.createInsecure(),
);

/** A unary gRPC call as a promise: its deadline is what is left of ours, and it is cancelled with us. */
const call = (method: 'reserve' | 'confirm', sku: string, mode: string) =>
  new Promise<unknown>((resolve, reject) =>
    inventory[method]({ sku, mode }, (error: grpc.ServiceError | null, answer?: unknown) =>
      error ? reject(error) : resolve(answer),
    ),
  );

const app = express();
app.get('/orders', async (req, res) => {
  const sku = String(req.query.sku ?? 'sku-1');
  const mode = String(req.query.mode ?? '');
  log('arrived');
  const stock = await call('reserve', sku, mode);
  // The message carries the deadline: the worker gets what is left, minus its time in the queue.
  await orders.send({ topic: 'orders', messages: [{ key: sku, value: JSON.stringify({ sku, mode }) }] });
  if (mode === 'slow-shipping') await call('confirm', sku, mode);
  res.json({ sku, stock });
});
app.use(errorHandler());
const server = app.listen(Number(process.env.PORT ?? 0), '127.0.0.1', () =>
  listening((server.address() as AddressInfo).port),
);
