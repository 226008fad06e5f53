import net from 'node:net';

/** The CancelRequest code of PostgreSQL's protocol (1234 << 16 | 5678). */
const CANCEL_REQUEST_CODE = 80877102;

/** How long a cancel request may take before its delivery counts as unknown. */
export const CANCEL_TIMEOUT_MS = 5_000;

/** Where a backend runs and how to name it in a cancel request: pg's Client keeps both. */
export interface Backend {
  readonly host?: string;
  readonly port?: number;
  readonly processID?: number | null;
  readonly secretKey?: number | null;
}

/**
 * Sends PostgreSQL's cancel request for `backend`'s running statement over a connection of its
 * own (what `pg_cancel_backend()` does), and resolves once the server has closed that connection,
 * which it does after signalling the backend. Resolves true when no stray cancel can follow
 * (delivered, or never sent); false when it was written but its fate is unknown (an error or
 * timeout after the write): that connection's next statement might be the one cancelled.
 * Plain TCP or a Unix socket; the server reads cancel requests before any TLS or authentication.
 */
export function sendCancel(backend: Backend): Promise<boolean> {
  const { processID, secretKey } = backend;
  if (typeof processID !== 'number' || typeof secretKey !== 'number') return Promise.resolve(true);
  const host = backend.host ?? 'localhost';
  const port = backend.port ?? 5432;
  return new Promise((resolve) => {
    const socket = host.startsWith('/') ? net.connect(`${host}/.s.PGSQL.${port}`) : net.connect(port, host);
    let written = false;
    let failed = false;
    const timer = setTimeout(() => {
      failed = true;
      socket.destroy();
    }, CANCEL_TIMEOUT_MS);
    timer.unref();
    socket.on('connect', () => {
      const request = Buffer.alloc(16);
      request.writeInt32BE(16, 0);
      request.writeInt32BE(CANCEL_REQUEST_CODE, 4);
      request.writeInt32BE(processID, 8);
      request.writeInt32BE(secretKey | 0, 12);
      written = true;
      socket.end(request);
    });
    socket.on('error', () => {
      failed = true;
    });
    socket.resume();
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(!(written && failed));
    });
  });
}
