/** Jaeger v2 built from source, with in-memory storage, the OTLP/HTTP receiver and the query API. */
import fs from 'node:fs';
import path from 'node:path';
import {
  cacheDir,
  HOST,
  type Ports,
  progress,
  runCommand,
  runLayout,
  type ServiceDefinition,
  since,
} from './common.ts';
import { startDetached } from './supervisor.ts';

export const JAEGER_VERSION = '2.13.0';
/** The image docker-compose.yml uses; test/compose.test.ts checks the two stay in step. */
export const JAEGER_IMAGE = `jaegertracing/jaeger:${JAEGER_VERSION}`;
// Jaeger v2.13.0 is published to the Go module proxy as v1.76.0 of the v1 module path.
const JAEGER_MODULE = 'github.com/jaegertracing/jaeger';
const JAEGER_MODULE_VERSION = 'v1.76.0';

function jaegerBin(): string {
  return path.join(cacheDir(), 'bin', `jaeger-${JAEGER_VERSION}`);
}

async function provision(): Promise<void> {
  const bin = jaegerBin();
  if (fs.existsSync(bin)) return;
  const start = performance.now();
  progress(`jaeger: building Jaeger ${JAEGER_VERSION} from source (once; 3 to 6 min on 2 cores) into ${bin}`);
  const src = path.join(cacheDir(), `jaeger-${JAEGER_VERSION}-build`);
  const logFile = path.join(src, 'provision.log');
  fs.mkdirSync(src, { recursive: true });
  // `go install ...@version` refuses modules with replace directives, so build from a wrapper
  // module that repeats Jaeger's replace and starts from Jaeger's own go.sum (without it,
  // checksum lookups fail for many of the collector's modules).
  fs.writeFileSync(
    path.join(src, 'go.mod'),
    `module ctxflow.local/jaeger\n\ngo 1.24.6\n\nreplace github.com/Shopify/sarama => github.com/Shopify/sarama v1.33.0\n`,
  );
  const module = `${JAEGER_MODULE}@${JAEGER_MODULE_VERSION}`;
  const { Dir } = JSON.parse(await runCommand('go', ['mod', 'download', '-json', module], src, logFile)) as {
    Dir: string;
  };
  fs.copyFileSync(path.join(Dir, 'go.sum'), path.join(src, 'go.sum'));
  fs.chmodSync(path.join(src, 'go.sum'), 0o644); // the module cache is read-only
  await runCommand('go', ['get', `${JAEGER_MODULE}/cmd/jaeger@${JAEGER_MODULE_VERSION}`], src, logFile);
  fs.mkdirSync(path.dirname(bin), { recursive: true });
  const partial = `${bin}.partial`;
  await runCommand('go', ['build', '-o', partial, `${JAEGER_MODULE}/cmd/jaeger`], src, logFile);
  fs.renameSync(partial, bin);
  progress(`jaeger: built in ${since(start)}`);
}

function jaegerConfig(ports: Partial<Ports>): string {
  return `# Only what the tests need: OTLP over HTTP in, memory storage, the query API and a health check.
service:
  extensions: [jaeger_storage, jaeger_query, healthcheckv2]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 100000
  jaeger_query:
    # Otherwise it traces itself over OTLP/gRPC to 127.0.0.1:4317 whatever OTEL_TRACES_EXPORTER
    # says, logs errors when nothing listens there, and spends 10 s flushing on SIGTERM.
    enable_tracing: false
    storage:
      traces: memstore
    http:
      endpoint: ${HOST}:${ports.jaegerQuery}
    # Always served; without an endpoint it listens on all interfaces.
    grpc:
      endpoint: ${HOST}:${ports.jaegerQueryGrpc}
  healthcheckv2:
    use_v2: true
    http:
      endpoint: ${HOST}:${ports.jaegerHealth}
receivers:
  otlp:
    protocols:
      http:
        endpoint: ${HOST}:${ports.otlpHttp}
processors:
  batch:
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
`;
}

async function start(ports: Partial<Ports>): Promise<number[]> {
  const paths = runLayout();
  fs.mkdirSync(paths.serviceDir('jaeger'), { recursive: true });
  fs.writeFileSync(paths.config('jaeger'), jaegerConfig(ports));
  return [startDetached('jaeger', jaegerBin(), ['--config', paths.config('jaeger')])];
}

async function probe(ports: Partial<Ports>): Promise<boolean> {
  try {
    const response = await fetch(`http://${HOST}:${ports.jaegerHealth}/status`, {
      signal: AbortSignal.timeout(1000),
    });
    return response.ok;
  } catch {
    return false;
  }
}

/** The Jaeger service: ready when `GET /status` on the health port answers 200. */
export const jaeger: ServiceDefinition = {
  ports: ['otlpHttp', 'jaegerQuery', 'jaegerQueryGrpc', 'jaegerHealth'],
  tools: () => (fs.existsSync(jaegerBin()) ? [] : ['go']),
  provision,
  start,
  probe,
  readyTimeoutMs: 30_000,
  env: (ports) => ({
    JAEGER_URL: `http://${HOST}:${ports.jaegerQuery}`,
    OTEL_EXPORTER_OTLP_ENDPOINT: `http://${HOST}:${ports.otlpHttp}`,
  }),
};
