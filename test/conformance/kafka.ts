/**
 * The behaviour of a Kafka service, the same whichever way ctxflow is wired into it: one suite,
 * run once per wiring (test/conformance-kafka-*.test.ts), against the real broker. A wiring
 * sends under `current()` and runs a handler per message in the message's context.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import path from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Kafka, KafkaMessage } from 'kafkajs';
import { background, current, withCancel, withTimeout } from '../../sdk/index.ts';
import { kafkaBrokers } from '../support/infra.ts';
import { createTopics, kafkaClient, readTopic, uniqueTopic, waitFor } from '../support/kafka.ts';
import { startWorker, stopWorker } from '../support/kafka-workers.ts';
import type { Point } from '../support/metrics.ts';
import type { ConformanceWorkerConfig } from './kafka-worker.ts';

/** Something to close at the end of a test. */
export interface Closable {
  close(): Promise<unknown>;
}

/** One way of wiring ctxflow into a Kafka service. Dead letters go to `<topic>.dead-letter`. */
export interface KafkaWiring {
  readonly name: ConformanceWorkerConfig['wiring'];
  /** The cancel bus topic of this process (and of the workers started for the wiring). */
  readonly busTopic: string;
  /** A producer that sends each value as a message of `topic` under `current()`. */
  producer(kafka: Kafka): Promise<Closable & { send(topic: string, values: string[]): Promise<void> }>;
  /** A consumer of `topic` in `groupId` running `handler` for each message, in its context. */
  consumer(
    kafka: Kafka,
    topic: string,
    groupId: string,
    handler: (message: KafkaMessage) => Promise<void>,
  ): Promise<Closable>;
}

const WORKER = path.join(import.meta.dirname, 'kafka-worker.ts');

interface Handled {
  value: string;
  deadline: number | undefined;
  at: number;
  cause?: string;
}

/** Sums the samples of `name` whose destination is `topic`. */
async function samples(points: (name: string) => Promise<Point[]>, name: string, topic: string) {
  return (await points(name))
    .filter((p) => p.attributes['messaging.destination.name'] === topic)
    .reduce((sum, p) => sum + p.value, 0);
}

/** The behaviour tests, for one wiring; `points` reads the process's metrics. */
export function kafkaConformance(wiring: KafkaWiring, points: (name: string) => Promise<Point[]>): void {
  const setup = async (t: TestContext, partitions = 1) => {
    const brokers = kafkaBrokers(t);
    if (brokers === undefined) return undefined;
    const kafka = kafkaClient(brokers);
    const topic = uniqueTopic(`conformance-${wiring.name}`);
    await createTopics(kafka, [topic], partitions);
    await createTopics(kafka, [`${topic}.dead-letter`]);
    const producer = await wiring.producer(kafka);
    t.after(() => producer.close());
    return { brokers, kafka, topic, producer };
  };
  const consume = async (
    t: TestContext,
    kafka: Kafka,
    topic: string,
    handler: (message: KafkaMessage) => Promise<void>,
    groupId = `g-${randomUUID()}`,
  ) => {
    const c = await wiring.consumer(kafka, topic, groupId, handler);
    t.after(() => c.close());
    return c;
  };

  describe(`Kafka conformance: ${wiring.name}`, () => {
    it('the budget on arrival is below the sender’s, queue time counted', async (t) => {
      const env = await setup(t);
      if (!env) return;
      const ctx = withTimeout(background(), 5_000);
      await ctx.run(() => env.producer.send(env.topic, ['a']));
      ctx.cancel();
      // Time in the queue: a deadline relative to the arrival alone would end after the sender's.
      await sleep(700);
      const seen: Handled[] = [];
      await consume(t, env.kafka, env.topic, async (m) => {
        seen.push({ value: String(m.value), deadline: current().deadline, at: Date.now() });
      });
      const [first] = await waitFor('the message', () => (seen.length > 0 ? seen : undefined), 20_000);
      assert.ok(first?.deadline !== undefined, 'a deadline');
      assert.ok(first.deadline <= (ctx.deadline as number), 'never after the sender’s deadline');
      assert.ok(
        first.deadline - first.at < 5_000 - 700 + 1,
        `budget on arrival ${first.deadline - first.at} ms`,
      );
    });

    it('a message expired in the queue is dead-lettered with its cause, never handled', async (t) => {
      const env = await setup(t);
      if (!env) return;
      const ctx = withTimeout(background(), 300);
      await ctx.run(() => env.producer.send(env.topic, ['late']));
      // The normal end, before the deadline: nothing published on the bus; the message expires in the queue.
      ctx.cancel();
      await sleep(600);
      let handled = 0;
      await consume(t, env.kafka, env.topic, async () => {
        handled++;
      });
      const [dead] = await readTopic(env.kafka, `${env.topic}.dead-letter`, 1, 20_000);
      assert.equal(dead?.value, 'late');
      assert.equal(dead?.headers['ctx-cancel-reason'], 'deadline_exceeded');
      assert.equal(dead?.headers['ctx-dead-letter-attempts'], '0');
      assert.equal(handled, 0);
    });

    it('a cancel through the bus reaches the running handler on another instance', async (t) => {
      const env = await setup(t);
      if (!env) return;
      const config: ConformanceWorkerConfig = {
        wiring: wiring.name,
        brokers: env.brokers,
        topic: env.topic,
        groupId: `g-${randomUUID()}`,
        busTopic: wiring.busTopic,
      };
      const worker = startWorker(0, config, {}, WORKER);
      t.after(() => stopWorker(worker));
      await waitFor('the worker', () => worker.events.find((e) => e.type === 'ready'), 30_000);
      const request = withCancel(background());
      await request.run(() => env.producer.send(env.topic, ['running']));
      await waitFor('the handler', () => worker.events.find((e) => e.type === 'start'), 20_000);
      request.cancel('client_disconnected');
      const end = await waitFor('the abort', () => worker.events.find((e) => e.type === 'end'), 20_000);
      assert.deepEqual(end, { type: 'end', value: 'running', cause: 'client_disconnected' });
    });

    it('a rebalance cancels the running handler (cause rebalance)', async (t) => {
      const env = await setup(t, 2);
      if (!env) return;
      await background().run(() => env.producer.send(env.topic, ['m']));
      const groupId = `g-${randomUUID()}`;
      const runs: { cause?: string }[] = [];
      await consume(
        t,
        env.kafka,
        env.topic,
        async () => {
          const ctx = current();
          const run: { cause?: string } = {};
          runs.push(run);
          if (runs.length > 1) return;
          await new Promise<void>((resolve) => ctx.signal.addEventListener('abort', () => resolve()));
          run.cause = ctx.cause?.code;
          throw ctx.signal.reason;
        },
        groupId,
      );
      await waitFor('the first run', () => (runs.length > 0 ? true : undefined), 20_000);
      await consume(t, env.kafka, env.topic, async () => {}, groupId);
      await waitFor('the first run cancelled', () => runs[0]?.cause, 30_000);
      assert.equal(runs[0]?.cause, 'rebalance');
    });

    it('one budget-on-arrival sample per message; the unhandled one counted as such, none as shed', async (t) => {
      const env = await setup(t);
      if (!env) return;
      const arrivals = () => samples(points, 'ctxflow.budget.arrival', env.topic);
      const before = await arrivals();
      const expiring = withTimeout(background(), 200);
      await expiring.run(() => env.producer.send(env.topic, ['expired']));
      expiring.cancel();
      await sleep(400);
      const live = withTimeout(background(), 10_000);
      await live.run(() => env.producer.send(env.topic, ['live-1', 'live-2']));
      live.cancel();
      const handled: string[] = [];
      await consume(t, env.kafka, env.topic, async (m) => {
        handled.push(String(m.value));
      });
      await waitFor('two handled', () => (handled.length >= 2 ? true : undefined), 20_000);
      await readTopic(env.kafka, `${env.topic}.dead-letter`, 1, 20_000);
      assert.deepEqual(handled, ['live-1', 'live-2']);
      assert.equal((await arrivals()) - before, 3);
      assert.equal(await samples(points, 'ctxflow.kafka.messages', env.topic), 1);
      assert.equal(await samples(points, 'ctxflow.request.shed', env.topic), 0);
    });
  });
}
