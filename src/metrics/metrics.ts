import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import { createRegistry, type MetricsRole, type MetricsSource } from './registry.js';
import { serveMetrics, type MetricsServer } from './server.js';
import { StatusPage } from './status-page.js';
import { StatusReader } from './status-reader.js';

/**
 * Serves `/metrics` and the status page (`/`) for a worker or a relay on
 * PGSCORE_METRICS_HOST:PGSCORE_METRICS_PORT, or does nothing (undefined) when the port is 0 (the
 * default). Call it before source.start(): the counters must hear the first batch, and a port
 * that is taken stops the command before it has claimed anything. connectionString is the
 * source's own: its role may SELECT ml.status and run ml._status_page().
 */
export async function startMetrics(
  role: MetricsRole,
  source: MetricsSource,
  connectionString: string,
  config: Pick<Config, 'metricsHost' | 'metricsPort'>,
  log: Logger,
): Promise<MetricsServer | undefined> {
  if (config.metricsPort === 0) return undefined;
  const status = new StatusReader(connectionString, log);
  try {
    const page = await StatusPage.load(status, log);
    const server = await serveMetrics(createRegistry(role, source, status), page, config.metricsHost, config.metricsPort, log);
    return {
      url: server.url,
      statusUrl: server.statusUrl,
      async close() {
        await server.close();
        await status.close();
      },
    };
  } catch (error) {
    await status.close();
    throw error;
  }
}
