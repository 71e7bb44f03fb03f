import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Registry } from 'prom-client';
import { ConfigError, describe } from '../errors.js';
import type { Logger } from '../log.js';
import type { StatusPage } from './status-page.js';

export interface MetricsServer {
  /** Where Prometheus scrapes, e.g. http://127.0.0.1:9464/metrics. */
  readonly url: string;
  /** The status page of the deployments, e.g. http://127.0.0.1:9464/. */
  readonly statusUrl: string;
  close(): Promise<void>;
}

/**
 * Serves the registry in Prometheus' text format on GET /metrics and the status page on GET /
 * (src/metrics/status-page.ts). A port that cannot be had is a configuration error (exit code
 * 2), reported before the worker starts.
 */
export async function serveMetrics(registry: Registry, page: StatusPage, host: string, port: number, log: Logger): Promise<MetricsServer> {
  const server = createServer((request, response) => {
    void respond(registry, page, request, response, log);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  }).catch((error: NodeJS.ErrnoException) => {
    const why = error.code === 'EADDRINUSE' ? 'the port is in use' : error.code === 'EACCES' ? 'permission denied' : error.message;
    throw new ConfigError(`cannot serve metrics on ${host}:${port}: ${why}`, {
      cause: error,
      hint: 'Set PGSCORE_METRICS_PORT (or --metrics-port) to a free port, or to off; each worker or relay on one machine needs its own.',
    });
  });
  // After listening, errors are per connection; a broken scrape must not end the worker.
  server.on('error', (error) => log.warn({ err: error }, 'metrics server error'));
  const origin = `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
  return {
    url: `${origin}/metrics`,
    statusUrl: `${origin}/`,
    async close() {
      // Prometheus keeps its connection alive between scrapes; close() alone would wait for it.
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

async function respond(registry: Registry, page: StatusPage, request: IncomingMessage, response: ServerResponse, log: Logger): Promise<void> {
  const path = (request.url ?? '/').split('?')[0] ?? '/';
  if (path !== '/metrics' && !page.serves(path)) {
    response.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' }).end('pgscore serves /metrics, and its status page at /\n');
    return;
  }
  if (request.method !== 'GET' && request.method !== 'HEAD') {
    response.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain; charset=utf-8' }).end('use GET\n');
    return;
  }
  if (path !== '/metrics') {
    await page.respond(path, request, response);
    return;
  }
  try {
    const body = await registry.metrics();
    response.writeHead(200, { 'content-type': registry.contentType }).end(request.method === 'HEAD' ? undefined : body);
  } catch (error) {
    log.warn({ err: error }, 'metrics: scrape failed');
    response.writeHead(500, { 'content-type': 'text/plain; charset=utf-8' }).end(`${describe(error)}\n`);
  }
}
