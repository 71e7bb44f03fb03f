import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { getMetricsFromIterator, type PromData, type PromLabels } from 'prom2javascript';
import type { Worker } from '../../src/worker/worker.js';
import { startMetrics } from '../../src/metrics/metrics.js';
import { quietLog, type TestDatabase } from './db.js';

/** A port nothing listens on now (the OS picks it). */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** Serves an in-process worker's metrics on a free port; `value` scrapes one sample. */
export async function serveWorkerMetrics(db: TestDatabase, worker: Worker) {
  const port = await freePort();
  const server = (await startMetrics('worker', worker, db.workerUrl, { metricsHost: '127.0.0.1', metricsPort: port }, quietLog))!;
  return {
    close: () => server.close(),
    async value(name: string, labels: PromLabels): Promise<number | undefined> {
      const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      // prom2javascript refuses NaN, which prom-client writes for a just-started event-loop gauge.
      const metrics = await getMetricsFromIterator(text.split('\n').filter((line) => !/ nan$/i.test(line))[Symbol.iterator]());
      const data = (metrics[name]?.data ?? []) as PromData[];
      return data.find((d) => Object.entries(labels).every(([k, v]) => d.labels[k] === v))?.value;
    },
  };
}
