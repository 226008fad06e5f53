// The produce and consume runs of bench/kafka.ts, shared with its OpenTelemetry process
// (kafka-otel.ts), which runs them on a kafkajs instrumented by @opentelemetry/instrumentation-kafkajs.
import { randomUUID } from 'node:crypto';
import type { Consumer, Kafka, Message } from 'kafkajs';

export interface Run {
  perSecond: number;
  cpuUsPerMessage: number;
}

export interface RunSettings {
  messages: number;
  batch: number;
}

/** A consumer as the runs use it: kafkajs's, or ctxflow's around it. */
export type RunConsumer = Pick<Consumer, 'connect' | 'subscribe' | 'disconnect'> & {
  run(config: { eachMessage: () => Promise<void> }): Promise<void>;
};

/** Sends `settings.messages` messages in sends of `settings.batch`, each send through `sendOne`. */
export async function produce(
  settings: RunSettings,
  sendOne: (messages: Message[]) => Promise<unknown>,
  messages: Message[],
): Promise<Run> {
  const cpu = process.cpuUsage();
  const start = performance.now();
  for (let sent = 0; sent < settings.messages; sent += settings.batch) await sendOne(messages);
  const seconds = (performance.now() - start) / 1000;
  const used = process.cpuUsage(cpu);
  return {
    perSecond: settings.messages / seconds,
    cpuUsPerMessage: (used.user + used.system) / settings.messages,
  };
}

/** Spins for `us` microseconds: a handler's own work. */
function work(us: number): void {
  const end = performance.now() + us / 1000;
  while (performance.now() < end);
}

/**
 * Consumes `settings.messages` messages of `from` with eachMessage and a handler that works `workUs`,
 * timed from the first message (the group join is not counted).
 */
export async function consume(
  settings: RunSettings,
  kafka: Kafka,
  from: string,
  workUs: number,
  wrap: (inner: Consumer) => RunConsumer = (inner) => inner,
): Promise<Run> {
  const total = settings.messages;
  const inner = kafka.consumer({ groupId: `bench-${randomUUID()}`, maxWaitTimeInMs: 100 });
  let count = 0;
  let first = 0;
  let cpu = process.cpuUsage();
  let done: () => void = () => {};
  const finished = new Promise<void>((resolve) => {
    done = resolve;
  });
  const seen = () => {
    if (count++ === 0) {
      first = performance.now();
      cpu = process.cpuUsage();
    }
    if (count === total) done();
  };
  const c = wrap(inner);
  await c.connect();
  await c.subscribe({ topic: from, fromBeginning: true });
  await c.run({
    eachMessage: async () => {
      if (workUs > 0) work(workUs);
      seen();
    },
  });
  await finished;
  const seconds = (performance.now() - first) / 1000;
  const used = process.cpuUsage(cpu);
  await c.disconnect();
  // The first message is not part of the window.
  return { perSecond: (total - 1) / seconds, cpuUsPerMessage: (used.user + used.system) / (total - 1) };
}
