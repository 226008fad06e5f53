/**
 * Endpoints of the test infrastructure, for integration tests.
 *
 * scripts/test.ts starts Kafka and Jaeger (scripts/infra/) and exports KAFKA_BROKERS, JAEGER_URL
 * and OTEL_EXPORTER_OTLP_ENDPOINT; running a test file alone works after
 * `eval "$(npm run -s infra -- up)"`. When a service is unavailable the test is skipped with the
 * reason, except under CI=true, where missing infrastructure fails the test.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

/** Set by scripts/test.ts to say why a service was not started (e.g. a missing tool). */
export const UNAVAILABLE_ENV = {
  kafka: 'CTXFLOW_KAFKA_UNAVAILABLE',
  jaeger: 'CTXFLOW_JAEGER_UNAVAILABLE',
  'kafka-cluster': 'CTXFLOW_KAFKA_CLUSTER_UNAVAILABLE',
  postgres: 'CTXFLOW_POSTGRES_UNAVAILABLE',
} as const;

/** Skips the current test with `reason`, or fails it under CI=true. Returns undefined for `return unavailable(...)`. */
export function unavailable(t: TestContext, reason: string): undefined {
  if (process.env.CI === 'true') assert.fail(`${reason} (CI=true: required)`);
  t.skip(reason);
  return undefined;
}

function notStarted(service: keyof typeof UNAVAILABLE_ENV, variable: string): string {
  return (
    process.env[UNAVAILABLE_ENV[service]] ??
    `${variable} is not set: run the tests with npm test, or eval "$(npm run -s infra -- up)" first`
  );
}

/** Kafka bootstrap servers, or undefined when the test was skipped. */
export function kafkaBrokers(t: TestContext): string[] | undefined {
  const brokers = process.env.KAFKA_BROKERS;
  if (!brokers) return unavailable(t, notStarted('kafka', 'KAFKA_BROKERS'));
  return brokers.split(',');
}

/** The PostgreSQL connection string (trust authentication, user and database `postgres`), or undefined when the test was skipped. */
export function postgres(t: TestContext): string | undefined {
  const url = process.env.POSTGRES_URL;
  if (!url) return unavailable(t, notStarted('postgres', 'POSTGRES_URL'));
  return url;
}

/** The three-broker cluster's bootstrap servers, or undefined when the test was skipped. */
export function kafkaCluster(t: TestContext): string[] | undefined {
  const brokers = process.env.KAFKA_CLUSTER_BROKERS;
  if (!brokers) return unavailable(t, notStarted('kafka-cluster', 'KAFKA_CLUSTER_BROKERS'));
  return brokers.split(',');
}

const CLUSTER_LOCK_WAIT_MS = 90_000;

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * The three-broker cluster, held alone for the rest of the test: a test that stops one of its
 * brokers must not run beside another that uses it (test files run two at a time). A lock
 * directory beside the system's temporary files, released when the test ends; a holder that died
 * without releasing it is known by its pid.
 */
export async function kafkaClusterAlone(t: TestContext): Promise<string[] | undefined> {
  const brokers = kafkaCluster(t);
  if (brokers === undefined) return undefined;
  const id = createHash('sha256').update(brokers.join(',')).digest('hex').slice(0, 12);
  const lock = join(tmpdir(), `ctxflow-kafka-cluster-${id}.lock`);
  const pidFile = join(lock, 'pid');
  const deadline = Date.now() + CLUSTER_LOCK_WAIT_MS;
  for (;;) {
    try {
      mkdirSync(lock);
      writeFileSync(pidFile, String(process.pid));
      break;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    let holder = 0;
    try {
      holder = Number(readFileSync(pidFile, 'utf8'));
    } catch {
      // Being taken right now: its pid is not written yet.
    }
    if (holder > 0 && !alive(holder)) {
      rmSync(lock, { recursive: true, force: true });
      continue;
    }
    assert.ok(Date.now() < deadline, `the Kafka cluster is still held by process ${holder}`);
    await sleep(100);
  }
  t.after(() => rmSync(lock, { recursive: true, force: true }));
  return brokers;
}

export interface JaegerEndpoints {
  /** Base URL of the query API, e.g. http://127.0.0.1:16686. */
  url: string;
  /** Base URL of the OTLP/HTTP receiver; traces go to `${otlpEndpoint}/v1/traces`. */
  otlpEndpoint: string;
}

/** Jaeger's endpoints, or undefined when the test was skipped. */
export function jaeger(t: TestContext): JaegerEndpoints | undefined {
  const url = process.env.JAEGER_URL;
  const otlpEndpoint = process.env.OTEL_EXPORTER_OTLP_ENDPOINT;
  if (!url || !otlpEndpoint) return unavailable(t, notStarted('jaeger', 'JAEGER_URL'));
  return { url, otlpEndpoint };
}

/** A trace as GET /api/traces/{traceId} returns it (the parts tests look at). */
export interface JaegerTrace {
  traceID: string;
  spans: {
    traceID: string;
    spanID: string;
    operationName: string;
    processID: string;
    references: { refType: string; traceID: string; spanID: string }[];
    tags: { key: string; type: string; value: unknown }[];
    logs: { timestamp: number; fields: { key: string; type: string; value: unknown }[] }[];
  }[];
  processes: Record<string, { serviceName: string; tags: { key: string; value: unknown }[] }>;
}

/**
 * Polls Jaeger until the trace holds at least `minSpans` spans: Jaeger batches writes, so a
 * just-exported span shows up after a short delay.
 */
export async function waitForTrace(
  jaegerUrl: string,
  traceId: string,
  { minSpans = 1, timeoutMs = 10_000 } = {},
): Promise<JaegerTrace> {
  const deadline = performance.now() + timeoutMs;
  let last = 'no response';
  while (performance.now() < deadline) {
    const response = await fetch(`${jaegerUrl}/api/traces/${traceId}`, { signal: AbortSignal.timeout(2000) });
    if (response.ok) {
      const { data } = (await response.json()) as { data: JaegerTrace[] };
      const found = data[0];
      if (found && found.spans.length >= minSpans) return found;
      last = `${found?.spans.length ?? 0} spans`;
    } else {
      last = `HTTP ${response.status}`;
    }
    await sleep(200);
  }
  throw new Error(`trace ${traceId} not in Jaeger after ${timeoutMs} ms (last: ${last})`);
}
