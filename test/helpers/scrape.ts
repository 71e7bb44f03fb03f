import { getMetricsFromIterator, type PromData, type PromLabels } from 'prom2javascript';
import type { Worker } from '../../src/worker/worker.js';
import { startMetrics } from '../../src/metrics/metrics.js';
import { quietLog, type TestDatabase } from './db.js';

/** Serves an in-process worker's metrics on a free port; `value` scrapes one sample. */
export async function serveWorkerMetrics(db: TestDatabase, worker: Worker) {
  for (let attempt = 0; ; attempt++) {
    const port = 20_000 + Math.floor(Math.random() * 20_000);
    try {
      const server = (await startMetrics('worker', worker, db.workerUrl, { metricsHost: '127.0.0.1', metricsPort: port }, quietLog))!;
      return {
        close: () => server.close(),
        async value(name: string, labels: PromLabels): Promise<number | undefined> {
          const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
          const metrics = await getMetricsFromIterator(text.split('\n').filter((line) => !/ nan$/i.test(line))[Symbol.iterator]());
          const data = (metrics[name]?.data ?? []) as PromData[];
          return data.find((d) => Object.entries(labels).every(([k, v]) => d.labels[k] === v))?.value;
        },
      };
    } catch (error) {
      if (attempt >= 5) throw error;
    }
  }
}
