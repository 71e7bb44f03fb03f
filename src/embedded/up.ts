import type { Config } from '../config.js';
import { createPool } from '../db/pool.js';
import { migrate } from '../db/migrate.js';
import { connectionAs, createWorkerRole } from '../db/roles.js';
import { ConfigError, describe } from '../errors.js';
import type { Logger } from '../log.js';
import { startMetrics } from '../metrics/metrics.js';
import { Worker } from '../worker/worker.js';
import { ensureExample } from './example.js';
import { stopOnFatalError } from './fatal.js';
import { startEmbeddedPostgres } from './postgres.js';

export const EMBEDDED_DATABASE = 'pgscore';
const UP_WORKER_ROLE = 'pgscore_up_worker';
const UP_WORKER_PASSWORD = 'pgscore';
/** Where `pgscore up` serves its worker's metrics and status page unless PGSCORE_METRICS_PORT says otherwise. */
export const UP_METRICS_PORT = 9464;

export interface Running {
  readonly url: string;
  /** The worker's /metrics, when PGSCORE_METRICS_PORT is set. */
  readonly metricsUrl: string | undefined;
  /** The worker's status page, beside /metrics. */
  readonly statusUrl: string | undefined;
  stop(): Promise<void>;
}

/**
 * `pgscore up`: embedded Postgres (data kept in config.dataDir), the ml schema, the example
 * model, table and deployment, and a worker. Returns once everything is ready.
 */
export async function up(config: Config, log: Logger, options: { metricsOptional?: boolean } = {}): Promise<Running> {
  const server = await startEmbeddedPostgres({
    dataDir: config.dataDir,
    port: config.port,
    onLog: (line) => log.debug({ postgres: line }, 'postgres'),
  });
  let worker: Worker | undefined;
  let metrics: Awaited<ReturnType<typeof startMetrics>> | undefined;
  const unguard = stopOnFatalError({
    async stopWorker() {
      await worker?.stop();
      await metrics?.close();
    },
    stopServer: () => server.stop(),
    signalServer: () => server.signalStop(),
  }, log);
  try {
    await server.createDatabase(EMBEDDED_DATABASE);
    const url = server.url(EMBEDDED_DATABASE);
    const pool = createPool(url, { max: 1, name: 'up' });
    try {
      const client = await pool.connect();
      try {
        await migrate(client);
      } finally {
        client.release();
      }
      await ensureExample(pool);
      await createWorkerRole(pool, UP_WORKER_ROLE, UP_WORKER_PASSWORD);
    } finally {
      await pool.end();
    }
    // The worker runs as a member of pgscore_worker, as in production; psql users get the superuser.
    const workerUrl = connectionAs(url, UP_WORKER_ROLE, UP_WORKER_PASSWORD);
    const started = (worker = new Worker(workerUrl, config, log));
    metrics = await startMetrics('worker', started, workerUrl, config, log).catch((error: unknown) => {
      // The default port may be taken (another pgscore up): go on without the page, and say so.
      if (!options.metricsOptional || !(error instanceof ConfigError)) throw error;
      log.warn({ err: error }, `no status page: ${describe(error)} (set PGSCORE_METRICS_PORT to another port)`);
      return undefined;
    });
    try {
      await started.start();
    } catch (error) {
      await metrics?.close();
      throw error;
    }
    const page = metrics;
    return {
      url,
      metricsUrl: page?.url,
      statusUrl: page?.statusUrl,
      async stop() {
        await started.stop();
        await page?.close();
        await server.stop();
        unguard();
      },
    };
  } catch (error) {
    await server.stop();
    unguard();
    throw error;
  }
}
