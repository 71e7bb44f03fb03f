import { readFile } from 'node:fs/promises';
import { pushModel } from '../../src/models/registry.js';
import { pick, type Scenario } from '../lib/context.js';
import { createFeatureTable, deploy, FEATURES, freshDatabase, insertSelectSql, queueSize, type BenchDatabase } from '../lib/db.js';
import { measureLatency, type LatencyRun } from '../lib/latency.js';
import { metric } from '../lib/result.js';
import { quantile, sleep } from '../lib/stats.js';
import { spawnPgscore } from '../lib/worker.js';

const RATE = 200;
const BACKLOG = 20_000;
const median = (values: number[]) => quantile([...values].sort((a, b) => a - b), 0.5);
const FAILING_MODEL = new URL('../../examples/models/fails_at_run.onnx', import.meta.url);

/** Inserts `rate` rows/s into a table until stopped (a neighbour deployment's traffic). */
function trafficInto(db: BenchDatabase, table: string, rate: number): { stop(): Promise<number> } {
  let running = true;
  let rows = 0;
  const loop = (async () => {
    const perTick = Math.max(1, Math.round(rate / 10));
    while (running) {
      await db.query(insertSelectSql(table, perTick)).then(() => (rows += perTick), () => undefined);
      await sleep(100);
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return rows;
    },
  };
}

/**
 * Isolation: commit → prediction latency of a healthy deployment alone, then while two other
 * deployments on the same worker are broken — one whose input column was dropped (with the
 * event triggers removed, so the worker has to find out itself) and one whose model fails on
 * every row (each batch is scored row by row down to dead letters) and has a 20,000-row backlog —
 * each with live traffic.
 */
export const isolation: Scenario = {
  id: '8',
  title: 'Isolation (a healthy deployment’s latency while other deployments on the same worker are broken)',
  async run(ctx, out) {
    const db = await freshDatabase(ctx.server, 'isolation');
    const seconds = pick(ctx, 6, 30);
    const options = { rate: RATE, seconds, windows: pick(ctx, 3, 6), warmupSeconds: 1, pollEveryMs: 1 };
    const worker = spawnPgscore(['worker'], { DATABASE_URL: db.url }, 'worker ready');
    try {
      await pushModel(db.pool, 'fails', await readFile(FAILING_MODEL));
      await createFeatureTable(db, 'healthy');
      await deploy(db, 'healthy', 'logreg');
      await worker.ready;
      await sleep(500);
      const alone = await measureLatency(db.url, 'healthy', options);

      await db.query('DROP EVENT TRIGGER pgscore_alter_table; DROP EVENT TRIGGER pgscore_drop');
      await createFeatureTable(db, 'dropped');
      await deploy(db, 'dropped', 'logreg');
      await createFeatureTable(db, 'failing');
      await db.query(`SELECT ml.deploy('failing', 'failing', 'fails', $1, '{"p1": "scores[1]"}', '{"backfill": false}')`, [JSON.stringify({ X: FEATURES })]);
      await db.query(insertSelectSql('dropped', 5000));
      await db.query(`ALTER TABLE dropped DROP COLUMN ${FEATURES[29]}`);
      // Issue 15: the failing model also works through a backlog (its p99 went 16.8 → 512 ms).
      await db.query(insertSelectSql('failing', BACKLOG));
      const failingTraffic = trafficInto(db, 'failing', RATE);
      const broken = await measureLatency(db.url, 'healthy', options);
      const failingRows = await failingTraffic.stop();
      const failingLeft = await queueSize(db, 'failing');

      const [dropped] = await db.query<{ status: string; reason: string }>(`SELECT status, reason FROM ml.deployments WHERE deployment = 'dropped'`);
      const [dead] = await db.query<{ n: string }>(`SELECT count(*) AS n FROM ml.errors WHERE deployment = 'failing'`);
      const p99 = (run: LatencyRun) => run.windows.map((w) => w.p99);
      out.metrics.push(
        metric('8 isolation', 'logreg', 'healthy commit→visible p50, alone', 'ms', alone.windows.map((w) => w.p50)),
        metric('8 isolation', 'logreg', 'healthy commit→visible p99, alone', 'ms', p99(alone)),
        metric('8 isolation', 'logreg', 'healthy commit→visible p50, beside broken', 'ms', broken.windows.map((w) => w.p50)),
        metric('8 isolation', 'logreg', 'healthy commit→visible p99, beside broken', 'ms', p99(broken)),
        // Each window beside the broken deployments against the median window alone.
        metric('8 isolation', 'logreg', 'p99 beside broken ÷ p99 alone', '×', p99(broken).map((p) => p / median(p99(alone))), { op: '<=', value: 2 }),
      );
      out.notes.push(
        `Method: ${RATE} single-row INSERTs/s into the healthy table for ${seconds} s (as scenario 5), first alone, then beside a deployment whose input column was dropped under 5,000 queued rows (event triggers removed: the worker finds it; it ended ${dropped?.status}: ${dropped?.reason}) and one whose model fails on every run, with a ${BACKLOG.toLocaleString('en')}-row backlog, while ${RATE} rows/s arrive (${failingRows} rows; ${dead?.n} dead letters, ${failingLeft} keys still queued at the end). One \`pgscore worker\` with default settings serves all three. Whole-run p50/p99: alone ${alone.overall.p50.toFixed(1)}/${alone.overall.p99.toFixed(1)} ms, beside broken ${broken.overall.p50.toFixed(1)}/${broken.overall.p99.toFixed(1)} ms.`,
      );
      ctx.progress(`isolation: p99 alone ${alone.overall.p99.toFixed(1)} ms, beside broken ${broken.overall.p99.toFixed(1)} ms`);
    } finally {
      await worker.stop();
      await db.close();
    }
  },
};
