import { pushModel } from '../../src/models/registry.js';
import { pick, type Scenario } from '../lib/context.js';
import { createFeatureTable, deploy, freshDatabase, insertSelectSql, modelBytes, MODELS, type BenchDatabase } from '../lib/db.js';
import { metric } from '../lib/result.js';
import { sleep, waitUntil } from '../lib/stats.js';
import { rssMiB, spawnPgscore } from '../lib/worker.js';

/**
 * The worker's RSS rises and falls by several MiB with the V8 heap's cycle (its old space fills
 * with garbage between full collections, one every second or so under load), so one reading is
 * not a level: a point is 20 readings 500 ms apart, taken while traffic flows.
 */
const WINDOW = { readings: 20, everyMs: 500 };

async function rssWindow(pid: number): Promise<number[]> {
  const values: number[] = [];
  for (let i = 0; i < WINDOW.readings; i++) {
    if (i > 0) await sleep(WINDOW.everyMs);
    values.push(await rssMiB(pid));
  }
  return values;
}

const median = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)]!;

async function scoredSoFar(db: BenchDatabase): Promise<number> {
  const rows = await db.query<{ n: string | null }>('SELECT sum(scored) AS n FROM ml._batches');
  return Number(rows[0]?.n ?? 0);
}

async function pendingTotal(db: BenchDatabase): Promise<number> {
  const rows = await db.query<{ n: string | null }>('SELECT sum(pending) AS n FROM ml.status');
  return Number(rows[0]?.n ?? 0);
}

/**
 * Bulk traffic until stopped: INSERT … SELECT of `chunk` rows into each table whenever at most
 * ~2 chunks are queued, so the worker always has full batches of both models. Every 1M rows it
 * waits for the queues to drain and truncates the tables, so the database stays small.
 */
function bulkTraffic(db: BenchDatabase, chunk: number): { stop(): Promise<void> } {
  let running = true;
  let sinceTruncate = 0;
  const loop = (async () => {
    while (running) {
      if (sinceTruncate >= 1_000_000) {
        if ((await pendingTotal(db)) > 0) {
          await sleep(50);
          continue;
        }
        for (const model of MODELS) await db.query(`TRUNCATE t_${model}`);
        sinceTruncate = 0;
      }
      if ((await pendingTotal(db)) < 2 * chunk) {
        for (const model of MODELS) await db.query(insertSelectSql(`t_${model}`, chunk));
        sinceTruncate += 2 * chunk;
      } else {
        await sleep(100);
      }
    }
  })();
  loop.catch(() => undefined); // awaited by stop(); this only keeps an early failure from being "unhandled"
  return {
    async stop() {
      running = false;
      await loop;
    },
  };
}

export const workerMemory: Scenario = {
  id: '7',
  title: 'Worker memory (RSS of `pgscore worker` over millions of predictions and model hot swaps)',
  async run(ctx, out) {
    const warmUp = 100_000;
    const checkpoints = pick(ctx, [500_000, 1_000_000], [1_000_000, 10_000_000]);
    const promotions = pick(ctx, 10, 100);
    const chunk = 50_000; // rows per INSERT … SELECT, per table
    const db = await freshDatabase(ctx.server, 'memory');
    const worker = spawnPgscore(['worker'], { DATABASE_URL: db.url, PGSCORE_LOG_LEVEL: 'warn' }, '');
    const samples: { label: string; rss: number[] }[] = [];
    const sample = async (label: string) => {
      samples.push({ label, rss: await rssWindow(worker.pid) });
      ctx.progress(`memory: ${label}, RSS ${median(samples.at(-1)!.rss).toFixed(0)} MiB`);
    };
    try {
      for (const model of MODELS) {
        await createFeatureTable(db, `t_${model}`);
        await deploy(db, `t_${model}`, model);
      }
      // A new version for every promotion (the same bytes registered again), so that each one
      // loads a session and retires one, as a hot swap to a retrained model does.
      const versionsPerModel = Math.ceil(promotions / MODELS.length);
      for (const model of MODELS) {
        const bytes = await modelBytes(model);
        for (let v = 0; v < versionsPerModel; v++) await pushModel(db.pool, model, bytes);
      }

      // Where the old start was: 1,000 rows per model, then idle. Shown, not the baseline.
      for (const model of MODELS) await db.query(insertSelectSql(`t_${model}`, 1000));
      await waitUntil(async () => (await scoredSoFar(db)) >= 2000, 'the first rows to be scored', 60_000, 50);
      await sample('after the first 2,000 predictions (idle; not the baseline)');

      // Warm-up: full 1000-row batches of both models until the V8 heap, onnxruntime's arenas
      // and malloc's heap have grown to their working size.
      const traffic = bulkTraffic(db, chunk);
      try {
        await waitUntil(async () => (await scoredSoFar(db)) >= warmUp, 'the warm-up rows to be scored', 300_000, 100);
        await sample(`start (after a ${warmUp.toLocaleString('en-US')}-prediction warm-up)`);
        for (const target of checkpoints) {
          await waitUntil(async () => (await scoredSoFar(db)) >= target, `${target} predictions`, 3_600_000, 250);
          await sample(`after ${target.toLocaleString('en-US')} predictions`);
        }
      } finally {
        await traffic.stop();
      }

      // Hot swaps while traffic flows: each promotion switches one model to its next version.
      // Application INSERTs and promotions can deadlock each other (see the notes); both are counted and retried.
      let oltp = true;
      const deadlocks = { insert: 0, promote: 0 };
      const isDeadlock = (error: unknown) => (error as { code?: string }).code === '40P01';
      const oltpLoop = (async () => {
        while (oltp) {
          for (const model of MODELS) {
            await db.query(insertSelectSql(`t_${model}`, 200)).catch((error: unknown) => {
              if (!isDeadlock(error)) throw error;
              deadlocks.insert++;
            });
          }
          await sleep(50);
        }
      })();
      oltpLoop.catch(() => undefined); // awaited below; this only keeps an early failure from being "unhandled"

      try {
        for (let i = 0; i < promotions; i++) {
          const model = MODELS[i % MODELS.length]!;
          const version = 2 + Math.floor(i / MODELS.length);
          for (;;) {
            try {
              await db.query('SELECT ml.promote($1, $2)', [model, version]);
              break;
            } catch (error) {
              if (!isDeadlock(error)) throw error;
              deadlocks.promote++;
            }
          }
          await sleep(250);
        }
        await sample(`right after ${promotions} promotions`);
      } finally {
        oltp = false;
        await oltpLoop;
      }
      await waitUntil(async () => (await pendingTotal(db)) === 0, 'the queues to drain', 120_000, 50);
      if (!ctx.quick) {
        await sleep(35_000);
        await sample('35 s after the promotions (idle)');
      }
      out.metrics.push(metric('7 worker memory', '-', `deadlocks during ${promotions} promotions: application INSERTs`, 'errors', [deadlocks.insert], { op: '<=', value: 0, text: '0' }));
      out.metrics.push(metric('7 worker memory', '-', `deadlocks during ${promotions} promotions: ml.promote`, 'errors', [deadlocks.promote]));
      for (const s of samples) {
        out.metrics.push(metric('7 worker memory', '-', `RSS ${s.label}`, 'MiB', s.rss));
      }
      // The goals read the growth after the most predictions and right after the promotions.
      // samples: the first 2,000, start, the checkpoints, right after the promotions, 35 s after.
      const start = median(samples[1]!.rss);
      const goals = new Map([[samples[checkpoints.length + 1]!.label, 'rssPredictions'], [samples[checkpoints.length + 2]!.label, 'rssPromotions']]);
      for (const s of samples.slice(2)) {
        const growth = metric('7 worker memory', '-', `RSS growth, ${s.label}`, '%', s.rss.map((r) => (100 * (r - start)) / start), { op: '<=', value: 10, text: '≤ 10 %' });
        const goal = goals.get(s.label);
        out.metrics.push(goal ? { ...growth, goal } : growth);
      }
      out.notes.push(
        `One \`pgscore worker\` child process (defaults) serving both deployments (logreg and gbm, each on its own table), so both models are loaded in one process. ` +
          `Traffic: INSERT … SELECT of ${chunk.toLocaleString('en-US')} rows into each table whenever at most ~${(2 * chunk).toLocaleString('en-US')} rows are queued (the worker scores full 1000-row batches of both models; tables truncated every 1M rows); predictions counted from ml._batches. ` +
          `Start (the baseline of every growth figure): after a warm-up of ${warmUp.toLocaleString('en-US')} predictions in full batches, when the V8 heap, onnxruntime's arenas and malloc's heap have reached their working size; the reading after the first 2,000 predictions (1,000 rows per model, then idle) is shown for comparison only. ` +
          `Each RSS point is ${WINDOW.readings} readings of VmRSS (/proc/<pid>/status) ${WINDOW.everyMs} ms apart, taken while the traffic goes on (median, min, max; growth is each reading against the median at start): the V8 heap's collection cycle moves RSS by several MiB within a second or two. ` +
          `Promotions: \`SELECT ml.promote(model, v)\` alternating between the two models, each to a version it never had (${versionsPerModel} versions per model, the same bytes registered again), so each promotion loads a session and retires one; one every 250 ms while 200-row inserts flow every 50 ms; "right after" is read while those inserts still flow. ` +
          `"35 s after" is the idle worker once the queues drained.`,
      );
    } finally {
      await worker.stop();
      await db.close();
    }
  },
};
