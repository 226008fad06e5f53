import type { AddressInfo } from 'node:net';
import { errorHandler } from 'ctxflow/express';
import { fetch } from 'ctxflow/fetch';
import express from 'express';
import { listening, log } from '../log.ts';

const ORDERS = process.env.ORDERS_URL ?? 'http://127.0.0.1:8081';

const app = express();
app.get('/checkout', async (req, res) => {
  log('arrived');
  // ctxflow's fetch (a plain fetch would do the same under init()), and one thing more: a callee's
  // end (a 504 with ctx-cancel-reason) comes back as the typed error, and ends this request too.
  const answer = await fetch(`${ORDERS}/orders?${new URLSearchParams(req.query as Record<string, string>)}`);
  res
    .status(answer.status)
    .type('json')
    .send(await answer.text());
});
app.use(errorHandler()); // a downstream 504 stays a 504, with its reason
const server = app.listen(Number(process.env.PORT ?? 0), '127.0.0.1', () =>
  listening((server.address() as AddressInfo).port),
);
