import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { listening, log, work } from '../log.ts';

// A plain node:http server: init() gives each request its context all the same.
const server = http.createServer(async (req, res) => {
  const mode = new URL(req.url ?? '/', 'http://shipping').searchParams.get('mode');
  log('arrived');
  try {
    await work(mode === 'slow-shipping' ? 5_000 : 20);
    res.end('shipped');
  } catch {
    // The context ended: init() has answered with its status and reason already.
  }
});
server.listen(Number(process.env.PORT ?? 0), '127.0.0.1', () =>
  listening((server.address() as AddressInfo).port),
);
