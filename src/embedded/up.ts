import type { Config } from '../config.js';
import { createPool } from '../db/pool.js';
import { migrate } from '../db/migrate.js';
import type { Logger } from '../log.js';
import { Worker } from '../worker/worker.js';
import { ensureExample } from './example.js';
import { startEmbeddedPostgres } from './postgres.js';

export const EMBEDDED_DATABASE = 'pgscore';

export interface Running {
  readonly url: string;
  stop(): Promise<void>;
}

/**
 * `pgscore up`: embedded Postgres (data kept in config.dataDir), the ml schema, the example
 * model, table and deployment, and a worker. Returns once everything is ready.
 */
export async function up(config: Config, log: Logger): Promise<Running> {
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
    } finally {
      await pool.end();
    }
    const worker = new Worker(url, config, log);
    await worker.start();
    return {
      url,
      async stop() {
        await worker.stop();
        await server.stop();
      },
    };
  } catch (error) {
    await server.stop();
    throw error;
  }
}
