/**
 * The same express service written with the explicit adapters and left unchanged under init():
 * the same statuses, cancel reasons, budgets sent downstream and cancellations.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { type Listening, listen } from './support/http.ts';
import { type Service, startService } from './support/process.ts';

/** What the downstream saw of one request. */
interface Downstream {
  timeout: number | undefined;
  closedEarly: boolean | undefined;
}

let down: Listening;
const seen: Downstream[] = [];
const services: Record<'explicit' | 'init', { service: Service; url: string }> = {} as never;

before(async () => {
  // The test process has no ctxflow hooks: a plain server that records what arrives.
  down = await listen((req, res) => {
    const entry: Downstream = {
      timeout: req.headers['ctx-timeout'] === undefined ? undefined : Number(req.headers['ctx-timeout']),
      closedEarly: undefined,
    };
    seen.push(entry);
    const ms = Number(new URL(req.url ?? '/', 'http://x').searchParams.get('ms'));
    const timer = setTimeout(() => res.end('done'), ms);
    res.on('close', () => {
      clearTimeout(timer);
      entry.closedEarly = !res.writableFinished;
    });
  });
  for (const kind of ['explicit', 'init'] as const) {
    const service = startService(`test/fixtures/init/same-${kind}.ts`, { DOWN: down.url });
    const { port } = await service.waitFor((line) => 'port' in line);
    services[kind] = { service, url: `http://127.0.0.1:${port}` };
    // One request first: the measured ones must not pay for loading code on first use.
    await fetch(`http://127.0.0.1:${port}/call?ms=0`).then((response) => response.text());
  }
});

after(async () => {
  await Promise.all(Object.values(services).map(({ service }) => service.stop()));
  await down.close();
});

// The budgets in play: the caller's 150 ms and the service's own 300 ms.
const LIMITS = [150, 300];

/** Sends one request (the client gives up after `abortAfterMs` when given) and waits for the downstream's end. */
async function outcome(base: string, ms: number, headers: Record<string, string>, abortAfterMs?: number) {
  const before = seen.length;
  const result = await new Promise<{ status: number | string; reason: string | undefined; body: string }>(
    (resolve) => {
      const req = http.get(`${base}/call?ms=${ms}`, { headers }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          body += chunk;
        });
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, reason: res.headers['ctx-cancel-reason'] as string, body }),
        );
      });
      req.on('error', () => resolve({ status: 'aborted', reason: undefined, body: '' }));
      if (abortAfterMs !== undefined) setTimeout(() => req.destroy(), abortAfterMs);
    },
  );
  for (let i = 0; i < 300 && seen[before]?.closedEarly === undefined; i++) await sleep(10);
  const downstream = seen[before];
  return {
    ...result,
    downstreamClosedEarly: downstream?.closedEarly,
    // Budgets differ by the milliseconds between two runs: compare the limit they are under.
    budgetSent:
      downstream?.timeout === undefined
        ? 'none'
        : (LIMITS.find((limit) => (downstream.timeout as number) < limit) ?? 'over'),
  };
}

const cases: [string, number, Record<string, string>, number?][] = [
  ['within the caller’s budget', 10, { 'ctx-timeout': '1000' }],
  ['the caller’s deadline passes first', 5000, { 'ctx-timeout': '150' }],
  ['the service’s own budget passes first', 5000, {}],
  ['the client goes away', 5000, { 'ctx-timeout': '2000' }, 100],
];

for (const [name, ms, headers, abortAfterMs] of cases) {
  test(`either way, ${name}`, async () => {
    const explicit = await outcome(services.explicit.url, ms, headers, abortAfterMs);
    const zero = await outcome(services.init.url, ms, headers, abortAfterMs);
    assert.deepEqual(zero, explicit);
  });
}
