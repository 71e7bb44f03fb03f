import type { Logger } from '../../src/log.js';
import { Worker } from '../../src/worker/worker.js';
import { insertSelectSql, queueSize, type BenchDatabase } from './db.js';
import { WORKER_DEFAULTS } from './worker.js';

/** Bulk-queues n rows (no worker running), in chunks of 100k statements. */
export async function queueRows(db: BenchDatabase, table: string, n: number): Promise<void> {
  for (let done = 0; done < n; done += 100_000) await db.query(insertSelectSql(table, Math.min(100_000, n - done)));
}

export interface DrainRun {
  readonly rowsPerSec: number;
  readonly batches: number;
  readonly phases: { claimMs: number; scoreMs: number; writeMs: number; batchMs: number };
}

export interface DrainOptions {
  /**
   * Called with the worker before it starts, outside the timing: what must hear its first batch
   * (a metrics server, src/metrics/metrics.ts) attaches here.
   */
  readonly onWorker?: (worker: Worker) => Promise<void> | void;
  /** Worker settings other than the defaults (e.g. the batch size). */
  readonly settings?: Partial<typeof WORKER_DEFAULTS>;
}

/**
 * Starts one notify worker on a queued backlog of n rows of `table` (deployed under the same
 * name) and times it until every row is written; the queue is then checked empty.
 */
export async function drainNotify(db: BenchDatabase, table: string, n: number, log: Logger, options: DrainOptions = {}): Promise<DrainRun> {
  const worker = new Worker(db.url, { ...WORKER_DEFAULTS, ...options.settings }, log);
  await options.onWorker?.(worker);
  let written = 0;
  let batches = 0;
  const phases = { claimMs: 0, scoreMs: 0, writeMs: 0, batchMs: 0 };
  let doneAt = 0;
  const done = new Promise<void>((resolve) => {
    worker.on('batch', (b) => {
      written += b.written;
      batches++;
      phases.batchMs += b.ms;
      if (b.phases) {
        phases.claimMs += b.phases.claimMs;
        phases.scoreMs += b.phases.scoreMs;
        phases.writeMs += b.phases.writeMs;
      }
      if (written >= n && !doneAt) {
        doneAt = performance.now();
        resolve();
      }
    });
  });
  const started = performance.now();
  await worker.start();
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`drain of ${n} rows did not finish (written ${written})`)), 20 * 60_000);
  });
  try {
    await Promise.race([done, timeout]);
  } finally {
    clearTimeout(timer);
    await worker.stop();
  }
  if ((await queueSize(db, table)) !== 0) throw new Error(`queue of ${table} not empty after the drain`);
  return { rowsPerSec: n / ((doneAt - started) / 1000), batches, phases };
}
