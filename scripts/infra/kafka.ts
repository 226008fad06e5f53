/** Kafka 3.9 as one native KRaft process (broker and controller in one), jars from Maven Central. */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Kafka, logLevel } from 'kafkajs';
import {
  cacheDir,
  HOST,
  type Ports,
  progress,
  runCommand,
  runLayout,
  type Service,
  type ServiceDefinition,
  since,
} from './common.ts';
import { startDetached } from './supervisor.ts';

export const KAFKA_VERSION = '3.9.1';
/** The image docker-compose.yml uses; test/compose.test.ts checks the two stay in step. */
export const KAFKA_IMAGE = `apache/kafka:${KAFKA_VERSION}`;

// kafkajs 2.2.4 hands setTimeout negative delays (harmless: Node waits 1 ms instead) and Node
// prints a TimeoutNegativeWarning for them. Drop that warning; print the others as before.
const printWarning = process.listeners('warning');
process.removeAllListeners('warning');
process.on('warning', (warning) => {
  if (warning.name !== 'TimeoutNegativeWarning') for (const print of printWarning) print(warning);
});

function kafkaHome(): string {
  return path.join(cacheDir(), `kafka-${KAFKA_VERSION}`);
}

function kafkaLibs(): string {
  return path.join(kafkaHome(), 'libs');
}

/** Broker settings shared by the native broker and docker-compose.yml (checked by test/compose.test.ts). */
export function kafkaSettings(ports: Pick<Ports, 'kafka' | 'kafkaController'>): Record<string, string> {
  return {
    'process.roles': 'broker,controller',
    'node.id': '1',
    'controller.quorum.voters': `1@${HOST}:${ports.kafkaController}`,
    listeners: `PLAINTEXT://${HOST}:${ports.kafka},CONTROLLER://${HOST}:${ports.kafkaController}`,
    'advertised.listeners': `PLAINTEXT://${HOST}:${ports.kafka}`,
    'listener.security.protocol.map': 'PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT',
    'controller.listener.names': 'CONTROLLER',
    'inter.broker.listener.name': 'PLAINTEXT',
    'num.partitions': '1',
    'default.replication.factor': '1',
    'min.insync.replicas': '1',
    'offsets.topic.replication.factor': '1',
    'offsets.topic.num.partitions': '1',
    'transaction.state.log.replication.factor': '1',
    'transaction.state.log.min.isr': '1',
    'group.initial.rebalance.delay.ms': '0',
    'auto.create.topics.enable': 'true',
  };
}

async function provision(): Promise<void> {
  const home = kafkaHome();
  const libs = kafkaLibs();
  if (fs.existsSync(libs)) return;
  const start = performance.now();
  progress(`kafka: downloading Kafka ${KAFKA_VERSION} jars from Maven Central into ${home}`);
  fs.mkdirSync(home, { recursive: true });
  // The server jar brings no logging backend and fails without log4j classes: add reload4j.
  fs.writeFileSync(
    path.join(home, 'pom.xml'),
    `<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.ctxflow</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>${KAFKA_VERSION}</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-reload4j</artifactId><version>1.7.36</version></dependency>
    <dependency><groupId>ch.qos.reload4j</groupId><artifactId>reload4j</artifactId><version>1.2.25</version></dependency>
  </dependencies>
</project>
`,
  );
  // Copy into a temporary directory and rename, so an interrupted download is never taken for a cached one.
  const partial = `${libs}.partial`;
  fs.rmSync(partial, { recursive: true, force: true });
  await runCommand(
    'mvn',
    ['-q', '-B', 'dependency:copy-dependencies', `-DoutputDirectory=${partial}`],
    home,
    path.join(home, 'provision.log'),
  );
  fs.renameSync(partial, libs);
  progress(`kafka: ${fs.readdirSync(libs).length} jars downloaded in ${since(start)}`);
}

/** A Kafka cluster id, as `StorageTool random-uuid` prints it, without starting a JVM for it. */
function kafkaClusterId(): string {
  for (;;) {
    const id = randomBytes(16).toString('base64url');
    if (!id.startsWith('-')) return id; // Kafka rejects ids that look like a command-line flag
  }
}

const KAFKA_LOG4J = `log4j.rootLogger=WARN, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.server.BrokerServer=INFO
`;

/** Writes a node's config and log4j settings, formats its storage once, and starts it detached. */
async function startNode(
  service: Service,
  dir: string,
  settings: Record<string, string>,
  clusterId: string,
  heap: string,
): Promise<number> {
  const paths = runLayout();
  const config = path.join(dir, 'server.properties');
  const dataDir = path.join(dir, 'data');
  const log4j = path.join(dir, 'log4j.properties');
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(
    config,
    `${Object.entries({ ...settings, 'log.dirs': dataDir })
      .map(([k, v]) => `${k}=${v}`)
      .join('\n')}\n`,
  );
  fs.writeFileSync(log4j, KAFKA_LOG4J);
  const java = ['-cp', `${kafkaLibs()}/*`, `-Dlog4j.configuration=file:${log4j}`];
  // Data is kept between runs (tests use unique topic names), so storage is formatted once.
  if (!fs.existsSync(path.join(dataDir, 'meta.properties'))) {
    const formatStart = performance.now();
    await runCommand(
      'java',
      [...java, 'kafka.tools.StorageTool', 'format', '-t', clusterId, '-c', config],
      dir,
      paths.log(service),
    );
    progress(`${service}: storage of ${path.basename(dir)} formatted in ${since(formatStart)}`);
  }
  return startDetached(service, 'java', [heap, ...java, 'kafka.Kafka', config]);
}

async function start(ports: Partial<Ports>): Promise<number[]> {
  const dir = runLayout().serviceDir('kafka');
  return [await startNode('kafka', dir, kafkaSettings(ports as Ports), kafkaClusterId(), '-Xmx512m')];
}

const CLUSTER_NODES = [1, 2, 3] as const;

/** Settings of node `node` (1 to 3) of the three-broker cluster: replication 3, `min.insync.replicas` 2. */
export function clusterSettings(ports: Partial<Ports>, node: 1 | 2 | 3): Record<string, string> {
  const client = (n: 1 | 2 | 3) => ports[`cluster${n}`];
  const controller = (n: 1 | 2 | 3) => ports[`clusterController${n}`];
  return {
    'process.roles': 'broker,controller',
    'node.id': String(node),
    'controller.quorum.voters': CLUSTER_NODES.map((n) => `${n}@${HOST}:${controller(n)}`).join(','),
    listeners: `PLAINTEXT://${HOST}:${client(node)},CONTROLLER://${HOST}:${controller(node)}`,
    'advertised.listeners': `PLAINTEXT://${HOST}:${client(node)}`,
    'listener.security.protocol.map': 'PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT',
    'controller.listener.names': 'CONTROLLER',
    'inter.broker.listener.name': 'PLAINTEXT',
    'num.partitions': '1',
    'default.replication.factor': '3',
    'min.insync.replicas': '2',
    'offsets.topic.replication.factor': '3',
    'offsets.topic.num.partitions': '1',
    'transaction.state.log.replication.factor': '3',
    'transaction.state.log.min.isr': '2',
    'group.initial.rebalance.delay.ms': '0',
    'auto.create.topics.enable': 'true',
  };
}

async function startCluster(ports: Partial<Ports>): Promise<number[]> {
  const dir = runLayout().serviceDir('kafka-cluster');
  fs.mkdirSync(dir, { recursive: true });
  // One cluster id for the three nodes' storage, kept with the data.
  const idFile = path.join(dir, 'cluster-id');
  if (!fs.existsSync(idFile)) fs.writeFileSync(idFile, kafkaClusterId());
  const clusterId = fs.readFileSync(idFile, 'utf8').trim();
  return Promise.all(
    CLUSTER_NODES.map((n) =>
      startNode(
        'kafka-cluster',
        path.join(dir, `node-${n}`),
        clusterSettings(ports, n),
        clusterId,
        '-Xmx384m',
      ),
    ),
  );
}

async function brokersAnswering(brokers: string[]): Promise<number> {
  const admin = new Kafka({
    clientId: 'ctxflow-infra',
    brokers,
    logLevel: logLevel.NOTHING,
    connectionTimeout: 1000,
    retry: { retries: 0 },
  }).admin();
  try {
    await admin.connect();
    await admin.listTopics();
    return (await admin.describeCluster()).brokers.length;
  } catch {
    return 0;
  } finally {
    await admin.disconnect().catch(() => {});
  }
}

async function probe(ports: Partial<Ports>): Promise<boolean> {
  return (await brokersAnswering([`${HOST}:${ports.kafka}`])) > 0;
}

function clusterBrokers(ports: Partial<Ports>): string[] {
  return CLUSTER_NODES.map((n) => `${HOST}:${ports[`cluster${n}`]}`);
}

/** The Kafka service: ready when a kafkajs admin client can list topics. */
export const kafka: ServiceDefinition = {
  ports: ['kafka', 'kafkaController'],
  tools: () => ['java', ...(fs.existsSync(kafkaLibs()) ? [] : ['mvn'])],
  provision,
  start,
  probe,
  readyTimeoutMs: 120_000,
  env: (ports) => ({ KAFKA_BROKERS: `${HOST}:${ports.kafka}` }),
};

/**
 * A three-broker KRaft cluster (each node broker and controller), for the loss tests: replication
 * factor 3 and `min.insync.replicas` 2 by default. Ready when all three brokers are registered.
 */
export const kafkaCluster: ServiceDefinition = {
  ports: [
    'cluster1',
    'cluster2',
    'cluster3',
    'clusterController1',
    'clusterController2',
    'clusterController3',
  ],
  tools: kafka.tools,
  provision,
  start: startCluster,
  probe: async (ports) => (await brokersAnswering(clusterBrokers(ports))) === CLUSTER_NODES.length,
  readyTimeoutMs: 180_000,
  env: (ports) => ({ KAFKA_CLUSTER_BROKERS: clusterBrokers(ports).join(',') }),
};
