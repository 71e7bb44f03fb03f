import { Kafka, logLevel, type LogEntry, type SASLOptions } from 'kafkajs';
import { requireKafkaBrokers, type Config } from '../config.js';
import type { Logger } from '../log.js';

/** A kafkajs client from the settings, logging through pino. */
export function createKafka(config: Config, log: Logger): Kafka {
  let sasl: SASLOptions | undefined;
  if (config.kafkaSaslMechanism) {
    sasl = {
      mechanism: config.kafkaSaslMechanism,
      username: config.kafkaSaslUsername ?? '',
      password: config.kafkaSaslPassword ?? '',
    } as SASLOptions;
  }
  const levels: Record<number, 'error' | 'warn' | 'info' | 'debug'> = {
    [logLevel.ERROR]: 'error',
    [logLevel.WARN]: 'warn',
    [logLevel.INFO]: 'info',
    [logLevel.DEBUG]: 'debug',
  };
  return new Kafka({
    clientId: config.kafkaClientId,
    brokers: requireKafkaBrokers(config),
    ssl: config.kafkaSsl,
    sasl,
    logLevel: logLevel.WARN,
    logCreator:
      () =>
      ({ level, log: entry }: LogEntry) => {
        const { message, ...rest } = entry;
        log[levels[level] ?? 'info']({ kafka: rest }, message);
      },
  });
}

/**
 * Creates the topic when it does not exist (partitions from PGSCORE_KAFKA_PARTITIONS); returns
 * how many partitions it has.
 */
export async function ensureTopic(kafka: Kafka, config: Config): Promise<number> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    const topics = await admin.listTopics();
    if (!topics.includes(config.kafkaTopic)) {
      await admin.createTopics({
        topics: [{ topic: config.kafkaTopic, numPartitions: config.kafkaPartitions }],
        waitForLeaders: true,
      });
    }
    const { topics: [metadata] } = await admin.fetchTopicMetadata({ topics: [config.kafkaTopic] });
    return metadata?.partitions.length || config.kafkaPartitions;
  } finally {
    await admin.disconnect();
  }
}
