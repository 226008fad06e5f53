// The start-up bench's application: an express service (no ctxflow code, no gRPC, no Kafka) that
// listens, writes when it was ready (milliseconds since its process began) and the CPU time it had
// used by then (all threads, milliseconds) as JSON, and exits.
import express from 'express';

const app = express();
app.get('/', (_req, res) => {
  res.json({ ok: true });
});
const server = app.listen(0, '127.0.0.1', () => {
  const readyMs = performance.now();
  const { user, system } = process.cpuUsage();
  process.stdout.write(`${JSON.stringify({ readyMs, cpuMs: (user + system) / 1000 })}\n`);
  server.close();
  // Without waiting for the span SDK's timers: the bench measures start-up, not shutdown.
  process.exit(0);
});
