import { pick, type Scenario } from '../lib/context.js';
import { createFeatureTable, deploy, deploymentId, freshDatabase, MODELS, type BenchDatabase } from '../lib/db.js';
import { drainNotify, queueRows, type DrainRun } from '../lib/drain.js';
import { metric, type ModelKey } from '../lib/result.js';
import { summarize, waitUntil } from '../lib/stats.js';
import { spawnPgscore } from '../lib/worker.js';

/** Relay + one Kafka worker (child processes) on a queued backlog; rows/s from the relay's start. */
async function drainKafka(db: BenchDatabase, brokers: string[], table: string, n: number, tag: string): Promise<number> {
  const env = {
    DATABASE_URL: db.url,
    KAFKA_BROKERS: brokers.join(','),
    PGSCORE_KAFKA_TOPIC: `bench.${tag}`,
    PGSCORE_KAFKA_GROUP: `bench-${tag}`,
    PGSCORE_LOG_LEVEL: 'info',
  };
  const id = await deploymentId(db, table);
  await db.query('DELETE FROM ml._kafka_counts');
  const kafkaWorker = spawnPgscore(['worker', '--transport', 'kafka'], env, 'worker ready');
  let relay;
  try {
    await kafkaWorker.ready;
    await queueRows(db, table, n);
    relay = spawnPgscore(['relay'], env, 'relay ready');
    await relay.ready;
    const started = performance.now();
    await waitUntil(async () => {
      const rows = await db.query<{ consumed: string }>('SELECT consumed FROM ml._kafka_counts WHERE deployment_id = $1', [id]);
      return Number(rows[0]?.consumed ?? 0) >= n;
    }, 'the Kafka worker to consume the backlog', 20 * 60_000, 25);
    const rate = n / ((performance.now() - started) / 1000);
    const unscored = await db.query<{ n: string }>(`SELECT count(*) AS n FROM ${table} WHERE p1 IS NULL`);
    if (Number(unscored[0]!.n) !== 0) throw new Error(`${unscored[0]!.n} rows of ${table} unscored after the Kafka drain`);
    return rate;
  } finally {
    await relay?.stop();
    await kafkaWorker.stop();
  }
}

export const backlogDrain: Scenario = {
  id: '4',
  title: 'Backlog drain (queued rows → predictions, one worker)',
  async run(ctx, out) {
    const n = pick(ctx, 100_000, 1_000_000);
    const reps = pick(ctx, 2, 3);
    const kafkaReps = pick(ctx, 1, 2);
    const kafkaN = pick(ctx, 30_000, 200_000);
    const db = await freshDatabase(ctx.server, 'drain');
    const targets: Record<ModelKey, number> = { logreg: 50_000, gbm: 30_000 };
    try {
      for (const model of MODELS) {
        const table = `t_${model}`;
        await createFeatureTable(db, table);
        await deploy(db, table, model);
        const runs: DrainRun[] = [];
        for (let rep = 0; rep < reps; rep++) {
          await db.query(`TRUNCATE ${table}`);
          await queueRows(db, table, n);
          await db.query('CHECKPOINT');
          runs.push(await drainNotify(db, table, n, ctx.log));
          ctx.progress(`drain notify ${model} rep ${rep + 1}/${reps}: ${Math.round(runs.at(-1)!.rowsPerSec)} rows/s`);
        }
        const rates = runs.map((r) => r.rowsPerSec);
        const raw = ctx.shared.get(`raw.${model}.1000`) ?? Number.NaN;
        out.metrics.push(metric('4 backlog drain', model, 'notify worker, rows/s end to end', 'rows/s', rates, { op: '>=', value: targets[model] }));
        out.metrics.push(metric('4 backlog drain', model, 'notify ÷ raw scoring at batch 1000', 'ratio', rates.map((r) => r / raw)));
        ctx.shared.set(`drain.notify.${model}`, summarize(rates).median);
        // Where a batch's time goes (sums over all batches of all repetitions, as shares).
        const sum = runs.reduce((a, r) => ({ claimMs: a.claimMs + r.phases.claimMs, scoreMs: a.scoreMs + r.phases.scoreMs, writeMs: a.writeMs + r.phases.writeMs, batchMs: a.batchMs + r.phases.batchMs, batches: a.batches + r.batches }), { claimMs: 0, scoreMs: 0, writeMs: 0, batchMs: 0, batches: 0 });
        for (const phase of ['claimMs', 'scoreMs', 'writeMs'] as const) {
          out.metrics.push(metric('4 backlog drain', model, `batch phase ${phase.replace('Ms', '')} (ms per 1000-row batch)`, 'ms', runs.map((r) => r.phases[phase] / r.batches)));
        }
        out.notes.push(
          `${model}: ${sum.batches} batches; per batch ${(sum.batchMs / sum.batches).toFixed(1)} ms = claim+read ${(sum.claimMs / sum.batches).toFixed(1)} ms (${Math.round((100 * sum.claimMs) / sum.batchMs)} %), score ${(sum.scoreMs / sum.batches).toFixed(1)} ms (${Math.round((100 * sum.scoreMs) / sum.batchMs)} %), write-back+commit ${(sum.writeMs / sum.batches).toFixed(1)} ms (${Math.round((100 * sum.writeMs) / sum.batchMs)} %); two lanes overlap, so batch times add up to about twice the wall time.`,
        );

        const kafka = await ctx.kafka();
        if (kafka.ok && (!ctx.quick || model === 'logreg')) {
          const kRates: number[] = [];
          const overNotify: number[] = [];
          for (let rep = 0; rep < kafkaReps; rep++) {
            // The notify drain of the same number of rows, just before: the ratio is taken side by side.
            await db.query(`TRUNCATE ${table}`);
            await queueRows(db, table, kafkaN);
            await db.query('CHECKPOINT');
            const notify = await drainNotify(db, table, kafkaN, ctx.log);
            await db.query(`TRUNCATE ${table}`);
            kRates.push(await drainKafka(db, kafka.brokers, table, kafkaN, `${model}-${rep}-${process.pid}`));
            overNotify.push(kRates.at(-1)! / notify.rowsPerSec);
            ctx.progress(`drain kafka ${model} rep ${rep + 1}/${kafkaReps}: ${Math.round(kRates.at(-1)!)} rows/s (notify ${Math.round(notify.rowsPerSec)})`);
          }
          out.metrics.push(metric('4 backlog drain', model, 'Kafka relay + 1 Kafka worker, rows/s', 'rows/s', kRates, { op: '>=', value: targets[model] }));
          out.metrics.push({
            ...metric('4 backlog drain', model, `Kafka ÷ notify, ${kafkaN.toLocaleString('en-US')} rows each, side by side`, 'ratio', overNotify, { op: '>=', value: 0.8 }),
            goal: 'kafkaOverNotify',
          });
          out.metrics.push(metric('4 backlog drain', model, 'Kafka ÷ raw scoring at batch 1000', 'ratio', kRates.map((r) => r / raw)));
          ctx.shared.set(`drain.kafka.${model}`, summarize(kRates).median);
        }
      }
      const kafka = await ctx.kafka();
      out.notes.push(
        `${n.toLocaleString('en-US')} rows queued by INSERT … SELECT with no worker running; then one notify worker (in the bench process, defaults: batch 1000, concurrency 2, 1 ORT thread) is started and timed from start() (includes loading the model) until its 'batch' events add up to every row; the queue is then checked empty.`,
        kafka.ok
          ? `Kafka (${kafkaN.toLocaleString('en-US')} rows, the Kafka path being slower): \`pgscore worker --transport kafka\` (child process, joined before the rows are queued) and \`pgscore relay\` (child process, started after); timed from the relay's "relay ready" log line until ml._kafka_counts.consumed reaches every row (consumed is counted in the write-back transaction); every row is then checked scored. Default 12 partitions, single local broker. "Kafka ÷ notify" divides each Kafka drain by a notify drain of the same number of rows run just before it (timed as above, from the worker's start()).${ctx.quick ? ' (Quick runs: Kafka on the logistic model only.)' : ''}`
          : `Kafka variants skipped: ${kafka.reason}.`,
      );
    } finally {
      await db.close();
    }
  },
};
