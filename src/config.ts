import { z } from 'zod';
import { ConfigError } from './errors.js';
import { DEFAULT_ORT_LOG_LEVEL, ORT_LOG_LEVELS } from './models/ort-log.js';

/**
 * Every setting pgscore reads, from the environment and from command-line flags (flags win).
 * Parsed once; every problem is reported at once; the result is frozen.
 */
const int = (min: number, max: number) => z.coerce.number().int().min(min).max(max);

const schema = z.object({
  databaseUrl: z
    .string()
    .regex(/^postgres(ql)?:\/\//, 'must be a postgres:// or postgresql:// connection string')
    .optional(),
  batchSize: int(1, 100_000).default(1000),
  maxWaitMs: int(0, 60_000).default(0),
  pollIntervalMs: int(10, 3_600_000).default(1000),
  concurrency: int(1, 32).default(2),
  ortThreads: int(1, 64).default(1),
  ortLogLevel: z.enum(ORT_LOG_LEVELS).default(DEFAULT_ORT_LOG_LEVEL),
  allowSuperuser: z
    .enum(['true', 'false', '1', '0'])
    .or(z.boolean())
    .transform((v) => v === true || v === 'true' || v === '1')
    .default(false),
  transport: z.enum(['notify', 'kafka']).default('notify'),
  kafkaBrokers: z
    .string()
    .transform((list) => list.split(',').map((broker) => broker.trim()).filter(Boolean))
    .pipe(z.array(z.string().regex(/^[^\s:]+:\d+$/, 'must be host:port')).min(1, 'needs at least one host:port'))
    .optional(),
  kafkaTopic: z.string().regex(/^[A-Za-z0-9._-]{1,249}$/, 'must be a valid Kafka topic name').default('pgscore.rows'),
  kafkaPartitions: int(1, 10_000).default(12),
  kafkaGroup: z.string().min(1).default('pgscore-workers'),
  kafkaClientId: z.string().min(1).default('pgscore'),
  kafkaSsl: z
    .enum(['true', 'false', '1', '0'])
    .transform((v) => v === 'true' || v === '1')
    .default(false),
  kafkaSaslMechanism: z.enum(['plain', 'scram-sha-256', 'scram-sha-512']).optional(),
  kafkaSaslUsername: z.string().optional(),
  kafkaSaslPassword: z.string().optional(),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  dataDir: z.string().min(1).default('.pgscore/data'),
  port: int(1, 65_535).default(54329),
  // Off unless set: a listening port is something an operator opens on purpose, and two workers
  // on one machine would otherwise collide on a shared default.
  metricsPort: z
    .preprocess(
      (v) => (v === 'off' ? 0 : v),
      z.coerce.number({ error: "must be a port number, or 0 or 'off' for no metrics" }).int().min(0).max(65_535),
    )
    .default(0),
  metricsHost: z.string().min(1).default('127.0.0.1'),
});

export type Config = Readonly<z.infer<typeof schema>>;
type Key = keyof z.infer<typeof schema>;

/** The environment variable behind each setting, as documented in the README. */
export const ENV_NAMES: Readonly<Record<Key, string>> = {
  databaseUrl: 'DATABASE_URL',
  batchSize: 'PGSCORE_BATCH_SIZE',
  maxWaitMs: 'PGSCORE_MAX_WAIT_MS',
  pollIntervalMs: 'PGSCORE_POLL_INTERVAL_MS',
  concurrency: 'PGSCORE_CONCURRENCY',
  ortThreads: 'PGSCORE_ORT_THREADS',
  ortLogLevel: 'PGSCORE_ORT_LOG_LEVEL',
  allowSuperuser: 'PGSCORE_ALLOW_SUPERUSER',
  transport: 'PGSCORE_TRANSPORT',
  kafkaBrokers: 'KAFKA_BROKERS',
  kafkaTopic: 'PGSCORE_KAFKA_TOPIC',
  kafkaPartitions: 'PGSCORE_KAFKA_PARTITIONS',
  kafkaGroup: 'PGSCORE_KAFKA_GROUP',
  kafkaClientId: 'KAFKA_CLIENT_ID',
  kafkaSsl: 'KAFKA_SSL',
  kafkaSaslMechanism: 'KAFKA_SASL_MECHANISM',
  kafkaSaslUsername: 'KAFKA_SASL_USERNAME',
  kafkaSaslPassword: 'KAFKA_SASL_PASSWORD',
  logLevel: 'PGSCORE_LOG_LEVEL',
  dataDir: 'PGSCORE_DATA_DIR',
  port: 'PGSCORE_PORT',
  metricsPort: 'PGSCORE_METRICS_PORT',
  metricsHost: 'PGSCORE_METRICS_HOST',
};

/** The command-line flag behind each setting (commander's camelCase option names). */
const FLAG_NAMES: Readonly<Record<Key, string>> = {
  databaseUrl: '--database-url',
  batchSize: '--batch-size',
  maxWaitMs: '--max-wait-ms',
  pollIntervalMs: '--poll-interval-ms',
  concurrency: '--concurrency',
  ortThreads: '--ort-threads',
  ortLogLevel: '--ort-log-level',
  allowSuperuser: '--allow-superuser',
  transport: '--transport',
  kafkaBrokers: '--kafka-brokers',
  kafkaTopic: '--kafka-topic',
  kafkaPartitions: '--kafka-partitions',
  kafkaGroup: '--kafka-group',
  kafkaClientId: '--kafka-client-id',
  kafkaSsl: '--kafka-ssl',
  kafkaSaslMechanism: '--kafka-sasl-mechanism',
  kafkaSaslUsername: '--kafka-sasl-username',
  kafkaSaslPassword: '--kafka-sasl-password',
  logLevel: '--log-level',
  dataDir: '--data-dir',
  port: '--port',
  metricsPort: '--metrics-port',
  metricsHost: '--metrics-host',
};

export function loadConfig(
  env: Readonly<Record<string, string | undefined>> = process.env,
  flags: Readonly<Record<string, unknown>> = {},
): Config {
  const raw: Record<string, unknown> = {};
  const origin: Record<string, string> = {};
  for (const key of Object.keys(ENV_NAMES) as Key[]) {
    const fromFlag = flags[key];
    const fromEnv = env[ENV_NAMES[key]] ?? (key === 'logLevel' ? env.LOG_LEVEL : undefined);
    if (fromFlag !== undefined) {
      raw[key] = fromFlag;
      origin[key] = FLAG_NAMES[key];
    } else if (fromEnv !== undefined && fromEnv !== '') {
      raw[key] = fromEnv;
      origin[key] = ENV_NAMES[key];
    }
  }
  const parsed = schema.superRefine((config, context) => {
    if (config.kafkaSaslMechanism && !(config.kafkaSaslUsername && config.kafkaSaslPassword)) {
      context.addIssue({
        code: 'custom',
        path: ['kafkaSaslMechanism'],
        message: 'needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD',
      });
    }
  }).safeParse(raw);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((issue) => {
      const key = String(issue.path[0]) as Key;
      const where = origin[key] ?? ENV_NAMES[key];
      return `  ${where}=${JSON.stringify(raw[key])}: ${issue.message}`;
    });
    throw new ConfigError(`invalid configuration:\n${problems.join('\n')}`, {
      hint: 'See "Configuration" in README.md for every setting and its range.',
    });
  }
  return Object.freeze(parsed.data);
}

/** The Kafka brokers, or an error that says how to give them. */
export function requireKafkaBrokers(config: Config): string[] {
  if (!config.kafkaBrokers) {
    throw new ConfigError('KAFKA_BROKERS is not set', {
      hint: 'Set KAFKA_BROKERS=host1:9092,host2:9092 (or pass --kafka-brokers) for the kafka transport and the relay.',
    });
  }
  return config.kafkaBrokers;
}

/** The connection string, or an error that says how to give one. */
export function requireDatabaseUrl(config: Config): string {
  if (!config.databaseUrl) {
    throw new ConfigError('DATABASE_URL is not set', {
      hint: 'Set DATABASE_URL=postgres://user:password@host:5432/db (or pass --database-url), or run `pgscore up` for an embedded Postgres.',
    });
  }
  return config.databaseUrl;
}
