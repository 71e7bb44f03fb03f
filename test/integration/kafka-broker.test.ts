/**
 * The Kafka harness itself: a real broker takes a 4-partition topic, 1000 idempotent acks=all
 * messages, and a consumer group reading them back, and keeps its data across a clean restart and a
 * kill -9. Where Java or Maven is missing the file is skipped, except in CI, where it fails.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { Kafka, logLevel, type Consumer, type Producer } from 'kafkajs';
import { ensureKafkaJars, kafkaAvailable, startKafkaBroker, type KafkaBroker } from '../helpers/kafka-broker.js';

const availability = await kafkaAvailable();
const skipReason = availability.ok ? undefined : availability.reason;

if (skipReason !== undefined && process.env.CI === 'true') {
  test('Kafka harness prerequisites (required in CI)', () => {
    throw new Error(`cannot run a Kafka broker: ${skipReason}`);
  });
} else if (skipReason !== undefined) {
  // The default reporter names no skipped test: say once why these were.
  console.warn(`skipping the Kafka broker tests: ${skipReason}`);
}

const TOPIC = 'harness-check';
const GROUP = 'harness-check-group';
const PARTITIONS = 4;

describe.skipIf(skipReason !== undefined)(
  `Kafka broker harness${skipReason === undefined ? '' : ` (skipped: ${skipReason})`}`,
  () => {
    let broker: KafkaBroker;
    let kafka: Kafka;

    beforeAll(async () => {
      await ensureKafkaJars();
      broker = await startKafkaBroker();
      kafka = new Kafka({ clientId: 'pgscore-harness-test', brokers: broker.brokers, logLevel: logLevel.NOTHING });
    });

    afterAll(async () => {
      await broker?.close();
    });

    /** Sends `count` messages keyed `${round}-${i}` with acks=all from an idempotent producer. */
    async function produce(round: string, count: number): Promise<void> {
      const producer: Producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
      await producer.connect();
      try {
        for (let start = 0; start < count; start += 250) {
          const messages = Array.from({ length: Math.min(250, count - start) }, (_, i) => ({
            key: `${round}-${start + i}`,
            value: JSON.stringify({ round, n: start + i }),
          }));
          await producer.send({ topic: TOPIC, acks: -1, messages });
        }
      } finally {
        await producer.disconnect();
      }
    }

    /**
     * Reads with the shared group until `expected` keys have arrived, then disconnects (committing the
     * offsets). Returns every key seen, so a test can tell redelivered messages from new ones.
     */
    async function consume(expected: number): Promise<{ keys: string[]; partitions: Set<number> }> {
      const consumer: Consumer = kafka.consumer({ groupId: GROUP, maxWaitTimeInMs: 100 });
      const keys: string[] = [];
      const partitions = new Set<number>();
      await consumer.connect();
      try {
        await consumer.subscribe({ topic: TOPIC, fromBeginning: true });
        await consumer.run({
          eachMessage: async ({ partition, message }) => {
            keys.push(message.key?.toString() ?? '');
            partitions.add(partition);
          },
        });
        const deadline = Date.now() + 60_000;
        while (keys.length < expected && Date.now() < deadline) await sleep(50);
        expect(keys.length, `messages consumed within 60 s`).toBeGreaterThanOrEqual(expected);
        // Give a stray extra message (a redelivery) a moment to show up before judging.
        await sleep(300);
      } finally {
        await consumer.disconnect();
      }
      return { keys, partitions };
    }

    function sleep(ms: number): Promise<void> {
      return new Promise((resolve) => setTimeout(resolve, ms));
    }

    function keysOf(round: string, count: number): string[] {
      return Array.from({ length: count }, (_, i) => `${round}-${i}`).sort();
    }

    test('produces and consumes 1000 messages over 4 partitions', async () => {
      const admin = kafka.admin();
      await admin.connect();
      try {
        expect(await admin.createTopics({ topics: [{ topic: TOPIC, numPartitions: PARTITIONS, replicationFactor: 1 }], waitForLeaders: true })).toBe(true);
        const metadata = await admin.fetchTopicMetadata({ topics: [TOPIC] });
        expect(metadata.topics[0]?.partitions).toHaveLength(PARTITIONS);
      } finally {
        await admin.disconnect();
      }

      await produce('first', 1000);
      const { keys, partitions } = await consume(1000);
      expect(keys.sort()).toEqual(keysOf('first', 1000));
      expect(partitions.size).toBe(PARTITIONS);
    });

    test('keeps topics, messages and group offsets across restart()', async () => {
      const port = broker.brokers[0];
      await broker.restart();
      expect(broker.brokers[0]).toBe(port);

      await produce('second', 1000);
      // The group's committed offsets survived: only the new round arrives, none of the first.
      const { keys } = await consume(1000);
      expect(keys.sort()).toEqual(keysOf('second', 1000));
    });

    test('recovers after kill() and start()', async () => {
      await broker.kill();
      await broker.start();

      await produce('third', 100);
      const { keys } = await consume(100);
      expect(keys.sort()).toEqual(keysOf('third', 100));

      const admin = kafka.admin();
      await admin.connect();
      try {
        const offsets = await admin.fetchTopicOffsets(TOPIC);
        const total = offsets.reduce((sum, { high, low }) => sum + Number(high) - Number(low), 0);
        expect(total).toBe(2100);
      } finally {
        await admin.disconnect();
      }
    });
  },
);
