import type { Worker } from '../../src/worker/worker.js';
import { startMetrics } from '../../src/metrics/metrics.js';
import { quietLog, type TestDatabase } from './db.js';
import { freePort } from './ports.js';
import { parseMetrics, type PromLabels, type PromSample } from './prometheus-text.js';

export * from './prometheus-text.js';


/** Serves an in-process worker's metrics on a free port; `value` scrapes one sample. */
export async function serveWorkerMetrics(db: TestDatabase, worker: Worker) {
  const port = await freePort();
  const server = (await startMetrics('worker', worker, db.workerUrl, { metricsHost: '127.0.0.1', metricsPort: port }, quietLog))!;
  return {
    close: () => server.close(),
    async value(name: string, labels: PromLabels): Promise<number | undefined> {
      const metrics = parseMetrics(await (await fetch(`http://127.0.0.1:${port}/metrics`)).text());
      const data = (metrics[name]?.data ?? []) as PromSample[];
      return data.find((d) => Object.entries(labels).every(([k, v]) => d.labels[k] === v))?.value;
    },
  };
}
