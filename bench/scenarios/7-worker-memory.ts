import { pushModel } from '../../src/models/registry.js';
import { pick, type Scenario } from '../lib/context.js';
import { createFeatureTable, deploy, freshDatabase, insertSelectSql, modelBytes, MODELS, type BenchDatabase } from '../lib/db.js';
import { metric } from '../lib/result.js';
import { sleep, waitUntil } from '../lib/stats.js';
import { rssMiB, spawnPgscore } from '../lib/worker.js';

/** Five VmRSS readings 200 ms apart. */
async function rssReadings(pid: number): Promise<number[]> {
  const values: number[] = [];
  for (let i = 0; i < 5; i++) {
    if (i > 0) await sleep(200);
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

export const workerMemory: Scenario = {
  id: '7',
  title: 'Worker memory (RSS of `pgscore worker` over millions of predictions and model hot swaps)',
  async run(ctx, out) {
    const checkpoints = pick(ctx, [100_000, 500_000], [1_000_000, 10_000_000]);
    const promotions = pick(ctx, 10, 100);
    const chunk = 50_000; // rows per INSERT … SELECT, per table
    const db = await freshDatabase(ctx.server, 'memory');
    const worker = spawnPgscore(['worker'], { DATABASE_URL: db.url, PGSCORE_LOG_LEVEL: 'warn' }, '');
    try {
      for (const model of MODELS) {
        await createFeatureTable(db, `t_${model}`);
        await deploy(db, `t_${model}`, model);
      }
      // Second versions to alternate with (not promoted yet).
      for (const model of MODELS) await pushModel(db.pool, model, await modelBytes(model));
      // The ready line is an info log; at warn level, wait for the worker to have scored a warm-up instead.
      for (const model of MODELS) await db.query(insertSelectSql(`t_${model}`, 1000));
      await waitUntil(async () => (await scoredSoFar(db)) >= 2000, 'the warm-up rows to be scored', 60_000, 50);
      await sleep(1000);
      const startReadings = await rssReadings(worker.pid);
      const start = median(startReadings);
      const samples: { label: string; rss: number[] }[] = [{ label: 'start (after 2,000-row warm-up)', rss: startReadings }];

      // Traffic: keep at most ~2 chunks queued; truncate the tables every 1M rows so the database stays small.
      let inserted = 2000;
      let sinceTruncate = 0;
      for (const target of checkpoints) {
        while ((await scoredSoFar(db)) < target) {
          if (inserted < target && (await pendingTotal(db)) < 2 * chunk) {
            for (const model of MODELS) await db.query(insertSelectSql(`t_${model}`, chunk));
            inserted += 2 * chunk;
            sinceTruncate += 2 * chunk;
          } else {
            await sleep(100);
          }
          if (sinceTruncate >= 1_000_000 && (await pendingTotal(db)) === 0) {
            for (const model of MODELS) await db.query(`TRUNCATE t_${model}`);
            sinceTruncate = 0;
          }
        }
        samples.push({ label: `after ${target.toLocaleString('en-US')} predictions`, rss: await rssReadings(worker.pid) });
        ctx.progress(`memory: ${target} predictions, RSS ${median(samples.at(-1)!.rss).toFixed(0)} MiB`);
      }

      // Hot swaps while traffic flows: alternate models and versions (1 ↔ 2).
      // Application INSERTs and promotions can deadlock each other (see the notes); both are counted and retried.
      let traffic = true;
      const deadlocks = { insert: 0, promote: 0 };
      const isDeadlock = (error: unknown) => (error as { code?: string }).code === '40P01';
      const trafficLoop = (async () => {
        while (traffic) {
          for (const model of MODELS) {
            await db.query(insertSelectSql(`t_${model}`, 200)).catch((error: unknown) => {
              if (!isDeadlock(error)) throw error;
              deadlocks.insert++;
            });
          }
          await sleep(50);
        }
      })();
      trafficLoop.catch(() => undefined); // awaited below; this only keeps an early failure from being "unhandled"

      try {
        for (let i = 0; i < promotions; i++) {
          const model = MODELS[i % 2]!;
          const version = Math.floor(i / 2) % 2 === 0 ? 2 : 1;
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
      } finally {
        traffic = false;
        await trafficLoop;
      }
      await waitUntil(async () => (await pendingTotal(db)) === 0, 'the queues to drain', 120_000, 50);
      samples.push({ label: `right after ${promotions} promotions`, rss: await rssReadings(worker.pid) });
      if (!ctx.quick) {
        await sleep(35_000); // retired sessions are released 30 s after a promotion
        samples.push({ label: `35 s after the promotions`, rss: await rssReadings(worker.pid) });
      }
      out.metrics.push(metric('7 worker memory', '-', `deadlocks during ${promotions} promotions: application INSERTs`, 'errors', [deadlocks.insert], { op: '<=', value: 0, text: '0' }));
      out.metrics.push(metric('7 worker memory', '-', `deadlocks during ${promotions} promotions: ml.promote`, 'errors', [deadlocks.promote]));
      for (const s of samples) {
        out.metrics.push(metric('7 worker memory', '-', `RSS ${s.label}`, 'MiB', s.rss));
      }
      // The goals read the growth after the most predictions and right after the promotions.
      const goals = new Map([[samples[checkpoints.length]!.label, 'rssPredictions'], [samples[checkpoints.length + 1]!.label, 'rssPromotions']]);
      for (const s of samples.slice(1)) {
        const growth = metric('7 worker memory', '-', `RSS growth, ${s.label}`, '%', s.rss.map((r) => (100 * (r - start)) / start), { op: '<=', value: 10, text: '≤ 10 %' });
        const goal = goals.get(s.label);
        out.metrics.push(goal ? { ...growth, goal } : growth);
      }
      out.notes.push(
        `One \`pgscore worker\` child process (defaults) serving both deployments (logreg and gbm, each on its own table), so both models are loaded in one process; RSS is VmRSS from /proc/<pid>/status, five readings 200 ms apart per point (median, min, max; growth relative to the median at start). Traffic: INSERT … SELECT of ${chunk.toLocaleString('en-US')} rows into each table, keeping at most ~${(2 * chunk).toLocaleString('en-US')} rows queued; predictions counted from ml._batches. Promotions: \`SELECT ml.promote(model, v)\` alternating between the two models and versions 1 and 2 (the same bytes registered twice), one every 250 ms while 200-row inserts flow every 50 ms.`,
      );
    } finally {
      await worker.stop();
      await db.close();
    }
  },
};
