/** Helpers for the Kafka tests: clients, unique topics, and reading a topic back. */
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { type Admin, type IHeaders, Kafka, type KafkaMessage, logLevel } from 'kafkajs';

const brokersOf = new WeakMap<Kafka, string[]>();

/** A kafkajs client for a test: quiet, fast retries. */
export function kafkaClient(brokers: string[], clientId = 'ctxflow-test'): Kafka {
  const kafka = new Kafka({
    clientId,
    brokers,
    logLevel: logLevel.NOTHING,
    retry: { initialRetryTime: 50, retries: 8 },
  });
  brokersOf.set(kafka, brokers);
  return kafka;
}

/** Whether the broker at `broker` knows every partition of `topics` with a leader. */
async function brokerKnows(broker: string, topics: string[], numPartitions: number): Promise<boolean> {
  const admin = kafkaClient([broker], 'ctxflow-test-metadata').admin();
  try {
    await admin.connect();
    const { topics: found } = await admin.fetchTopicMetadata({ topics });
    return found.every(
      (t) => t.partitions.length === numPartitions && t.partitions.every((p) => p.leader >= 0),
    );
  } catch {
    return false;
  } finally {
    await admin.disconnect().catch(() => {});
  }
}

/** A topic name no other test or run uses. */
export function uniqueTopic(name: string): string {
  return `test.${name}.${randomUUID().slice(0, 8)}`;
}

/**
 * Creates topics and waits until every broker knows every partition's leader (kafkajs's own
 * `waitForLeaders`, and a consumer's subscribe, fail on a cluster while one broker does not yet).
 */
export async function createTopics(kafka: Kafka, topics: string[], numPartitions = 1): Promise<void> {
  const admin: Admin = kafka.admin();
  await admin.connect();
  try {
    await admin.createTopics({
      waitForLeaders: false,
      topics: topics.map((topic) => ({ topic, numPartitions })),
    });
    // Every broker must know them: a client may ask any of them for metadata.
    const brokers = brokersOf.get(kafka) ?? [];
    await waitFor(
      `leaders of ${topics.join(', ')} on ${brokers.join(', ')}`,
      async () => {
        const known = await Promise.all(brokers.map((broker) => brokerKnows(broker, topics, numPartitions)));
        return known.every(Boolean) ? true : undefined;
      },
      15_000,
    );
  } finally {
    await admin.disconnect();
  }
}

/** A message as read back, with string headers. */
export interface ReadMessage {
  partition: number;
  offset: string;
  key: string | undefined;
  value: string | undefined;
  /** The record's timestamp, epoch ms. */
  timestamp: string;
  headers: Record<string, string | string[]>;
}

export function stringHeaders(headers: IHeaders | undefined): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [key, value] of Object.entries(headers ?? {})) {
    if (value === undefined) continue;
    out[key] = Array.isArray(value) ? value.map(String) : String(value);
  }
  return out;
}

function toRead(partition: number, message: KafkaMessage): ReadMessage {
  return {
    partition,
    offset: message.offset,
    key: message.key?.toString(),
    value: message.value?.toString(),
    timestamp: message.timestamp,
    headers: stringHeaders(message.headers),
  };
}

/** Reads `topic` from the beginning until `count` messages are in, or fails after `timeoutMs`. */
export async function readTopic(
  kafka: Kafka,
  topic: string,
  count: number,
  timeoutMs = 10_000,
): Promise<ReadMessage[]> {
  const reader = kafka.consumer({ groupId: `test-reader-${randomUUID()}`, maxWaitTimeInMs: 100 });
  const messages: ReadMessage[] = [];
  await reader.connect();
  try {
    await reader.subscribe({ topic, fromBeginning: true });
    await reader.run({
      eachMessage: async ({ partition, message }) => {
        messages.push(toRead(partition, message));
      },
    });
    const end = performance.now() + timeoutMs;
    while (messages.length < count) {
      if (performance.now() > end)
        throw new Error(`${topic}: ${messages.length} of ${count} messages after ${timeoutMs} ms`);
      await sleep(50);
    }
    return messages;
  } finally {
    await reader.disconnect();
  }
}

/** Polls `check` every 20 ms until it returns a value, or fails after `timeoutMs`. */
export async function waitFor<T>(
  what: string,
  check: () => T | undefined | Promise<T | undefined>,
  timeoutMs = 10_000,
): Promise<T> {
  const end = performance.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (performance.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}
