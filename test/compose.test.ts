// docker-compose.yml must describe the same infrastructure as scripts/infra/. No Docker engine
// is needed: test/compose/ loads the file with compose-go, the parser behind `docker compose config`.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import {
  cacheDir,
  DEFAULT_PORTS,
  JAEGER_IMAGE,
  KAFKA_IMAGE,
  kafkaSettings,
  onPath,
} from '../scripts/infra/index.ts';
import { unavailable } from './support/infra.ts';

const run = promisify(execFile);
const root = path.join(import.meta.dirname, '..');
const checker = path.join(import.meta.dirname, 'compose');

/** The example services (examples/), built from examples/Dockerfile. */
const EXAMPLES = ['fulfillment', 'gateway', 'inventory', 'orders', 'shipping'];

interface ComposeService {
  image: string;
  build?: { context: string; dockerfile: string };
  command?: string[];
  network_mode?: string;
  environment?: Record<string, string | null>;
  ports?: { host_ip?: string; target: number; published: string; protocol: string }[];
  healthcheck?: { test: string[]; interval: string; timeout: string; retries: number };
}

/** Builds the checker once per version of its sources; the binary is cached outside the work tree. */
async function buildChecker(): Promise<string> {
  const hash = createHash('sha256');
  for (const file of ['go.mod', 'go.sum', 'main.go']) hash.update(fs.readFileSync(path.join(checker, file)));
  const binary = path.join(cacheDir(), 'bin', `compose-check-${hash.digest('hex').slice(0, 12)}`);
  if (!fs.existsSync(binary)) {
    await run('go', ['build', '-o', `${binary}.partial`, '.'], { cwd: checker });
    fs.renameSync(`${binary}.partial`, binary);
  }
  return binary;
}

test('docker-compose.yml matches the native infrastructure', { timeout: 300_000 }, async (t) => {
  if (!onPath('go')) return unavailable(t, 'go not found on PATH: cannot build the compose-go checker');
  const { stdout } = await run(await buildChecker(), [path.join(root, 'docker-compose.yml')]);
  const { services } = JSON.parse(stdout) as { services: Record<string, ComposeService> };
  assert.deepEqual(Object.keys(services).sort(), [...EXAMPLES, 'jaeger', 'kafka'].sort());
  const { kafka, jaeger } = services as { kafka: ComposeService; jaeger: ComposeService };

  const published = (service: ComposeService) =>
    (service.ports ?? []).map((p) => `${p.host_ip}:${p.published}->${p.target}/${p.protocol}`);

  assert.equal(kafka.image, KAFKA_IMAGE);
  assert.deepEqual(published(kafka), [`127.0.0.1:${DEFAULT_PORTS.kafka}->${DEFAULT_PORTS.kafka}/tcp`]);
  // The image turns KAFKA_FOO_BAR into foo.bar. Only the listeners differ: in a container they
  // bind all interfaces, and the published port is what is limited to 127.0.0.1.
  for (const [key, value] of Object.entries(kafkaSettings(DEFAULT_PORTS))) {
    const expected = key === 'listeners' ? value.replaceAll('127.0.0.1', '') : value;
    assert.equal(kafka.environment?.[`KAFKA_${key.toUpperCase().replaceAll('.', '_')}`], expected, key);
  }
  assert.ok(
    kafka.healthcheck?.test.join(' ').includes(`127.0.0.1:${DEFAULT_PORTS.kafka}`),
    'Kafka healthcheck',
  );

  assert.equal(jaeger.image, JAEGER_IMAGE);
  assert.deepEqual(
    published(jaeger).sort(),
    [DEFAULT_PORTS.jaegerQuery, DEFAULT_PORTS.otlpHttp, DEFAULT_PORTS.jaegerHealth]
      .map((port) => `127.0.0.1:${port}->${port}/tcp`)
      .sort(),
  );
  assert.ok(
    jaeger.healthcheck?.test.join(' ').includes(`127.0.0.1:${DEFAULT_PORTS.jaegerHealth}/status`),
    'Jaeger healthcheck',
  );
});

test('docker-compose.yml runs each example service from its main.ts, reaching Kafka and Jaeger as advertised', {
  timeout: 300_000,
}, async (t) => {
  if (!onPath('go')) return unavailable(t, 'go not found on PATH: cannot build the compose-go checker');
  const { stdout } = await run(await buildChecker(), [path.join(root, 'docker-compose.yml')]);
  const { services } = JSON.parse(stdout) as { services: Record<string, ComposeService> };
  assert.ok(fs.existsSync(path.join(root, 'examples', 'Dockerfile')));
  for (const name of EXAMPLES) {
    const service = services[name] as ComposeService;
    assert.equal(service.build?.dockerfile, 'examples/Dockerfile', name);
    assert.deepEqual(service.command, [`examples/${name}/main.ts`], name);
    assert.ok(fs.existsSync(path.join(root, 'examples', name, 'main.ts')), name);
    // The broker advertises 127.0.0.1: the services share the host's network to reach it.
    assert.equal(service.network_mode, 'host', name);
    assert.equal(service.environment?.OTEL_SERVICE_NAME, name);
    assert.equal(
      service.environment?.OTEL_EXPORTER_OTLP_ENDPOINT,
      `http://127.0.0.1:${DEFAULT_PORTS.otlpHttp}`,
      name,
    );
    if (service.environment?.KAFKA_BROKERS !== undefined) {
      assert.equal(service.environment.KAFKA_BROKERS, `127.0.0.1:${DEFAULT_PORTS.kafka}`, name);
    }
  }
});
