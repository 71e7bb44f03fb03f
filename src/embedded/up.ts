import type { Config } from '../config.js';
import { createPool } from '../db/pool.js';
import { migrate } from '../db/migrate.js';
import { connectionAs, createWorkerRole } from '../db/roles.js';
import { ConfigError } from '../errors.js';
import type { Logger } from '../log.js';
import { startMetrics } from '../metrics/metrics.js';
import { Worker } from '../worker/worker.js';
import { ensureExample } from './example.js';
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
      await createWorkerRole(pool, UP_WORKER_ROLE, UP_WORKER_PASSWORD, { replication: true });
    } finally {
      await pool.end();
    }
    // The worker runs as a member of pgscore_worker, as in production; psql users get the superuser.
    const workerUrl = connectionAs(url, UP_WORKER_ROLE, UP_WORKER_PASSWORD);
    const worker = new Worker(workerUrl, config, log);
    const metrics = await startMetrics('worker', worker, workerUrl, config, log).catch((error: unknown) => {
      // The default port may be taken (another pgscore up): go on without the page, and say so.
      if (!options.metricsOptional || !(error instanceof ConfigError)) throw error;
      log.warn(`no status page: ${error.message} (set PGSCORE_METRICS_PORT to another port)`);
      return undefined;
    });
    try {
      await worker.start();
    } catch (error) {
      await stopQuietly(() => worker.stop(), () => metrics?.close());
      throw error;
    }
    return {
      url,
      metricsUrl: metrics?.url,
      statusUrl: metrics?.statusUrl,
      // In this order: the worker finishes its batches and closes its pools while Postgres is up
      // (stopped first, Postgres killed its connections under it: hundreds of warnings on Ctrl-C).
      async stop() {
        try {
          await worker.stop();
          await metrics?.close();
        } finally {
          await server.stop();
        }
      },
    };
  } catch (error) {
    await server.stop();
    throw error;
  }
}

/** Undoes a start that failed half-way; the start's own error is the one to report. */
async function stopQuietly(...steps: (() => Promise<unknown> | undefined)[]): Promise<void> {
  for (const step of steps) await Promise.resolve(step()).catch(() => undefined);
}
