import { Kafka, logLevel, type LogEntry, type SASLOptions } from 'kafkajs';
import { requireKafkaBrokers, type Config } from '../config.js';
import { PgscoreError } from '../errors.js';
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

/** kafkajs errors that mean a broker is out of reach, for now. */
const UNREACHABLE = new Set([
  'KafkaJSConnectionError',
  'KafkaJSConnectionClosedError',
  'KafkaJSRequestTimeoutError',
  'KafkaJSNoBrokerAvailableError',
  'KafkaJSBrokerNotFound',
  'KafkaJSMetadataNotLoaded',
  'KafkaJSTopicMetadataNotLoaded',
  'KafkaJSLockTimeout',
]);

/**
 * A kafkajs failure as a PgscoreError whose `retriable` says whether trying again can help: a
 * broker out of reach or busy ("Closed connection", "Connection timeout", a retriable protocol
 * error such as NOT_LEADER_OR_FOLLOWER, and kafkajs giving up its own retries of those) is; a
 * refused authorisation or a message too large is not. The failure policy reads the flag
 * (src/pipeline/policy.ts): the relay backs off and keeps the rows queued instead of pausing
 * the deployment.
 */
export function kafkaFailure(error: unknown, doing: string): PgscoreError {
  const chain: { name?: unknown; message?: unknown; retriable?: unknown }[] = [];
  for (let e: unknown = error; typeof e === 'object' && e !== null && chain.length < 10; e = (e as { cause?: unknown }).cause) {
    chain.push(e as { name?: unknown; retriable?: unknown });
  }
  const root = chain.at(-1);
  const retriable = chain.some((e) => typeof e.name === 'string' && UNREACHABLE.has(e.name)) || root?.retriable === true;
  const message = error instanceof Error ? error.message : String(error);
  const rootMessage = root && root !== error && typeof root.message === 'string' && root.message !== message ? ` (${root.message})` : '';
  return new PgscoreError(`${doing}: ${message}${rootMessage}`, {
    retriable,
    cause: error,
    hint: retriable ? 'Kafka is out of reach or busy; pgscore tries again and nothing is lost meanwhile' : undefined,
  });
}
