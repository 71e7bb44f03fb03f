import { rm } from 'node:fs/promises';
import { pick, type Scenario } from '../lib/context.js';
import { createFeatureTable, deploy, deploymentId, FEATURES, freshDatabase, insertSelectSql, MODELS } from '../lib/db.js';
import { metric, type ModelKey } from '../lib/result.js';

export const bulkIngest: Scenario = {
  id: '2',
  title: 'Bulk ingest cost (INSERT … SELECT and COPY, with a deployment ÷ without)',
  async run(ctx, out) {
    const n = pick(ctx, 100_000, 1_000_000);
    const reps = pick(ctx, 2, 3);
    const db = await freshDatabase(ctx.server, 'bulk');
    const csv = `/tmp/pgscore-bench-${process.pid}.csv`;
    try {
      await createFeatureTable(db, 't_plain');
      const queues: Record<string, string> = {};
      for (const model of MODELS) {
        await createFeatureTable(db, `t_${model}`);
        await deploy(db, `t_${model}`, model);
        queues[`t_${model}`] = `ml._queue_${await deploymentId(db, `t_${model}`)}`;
      }
      // One CSV written by the server, read back by COPY FROM (server-side file: no client in the timing).
      await db.query(`COPY (${insertSelectSql('x', n).replace(/^INSERT INTO x \([^)]*\)\s*/, '')}) TO '${csv}' (FORMAT csv)`);

      const variants = ['t_plain', ...MODELS.map((m) => `t_${m}`)];
      const ms: Record<string, Record<string, number[]>> = { insert: {}, copy: {} };
      for (const kind of ['insert', 'copy'] as const) {
        for (const v of variants) ms[kind]![v] = [];
        for (let rep = 0; rep < reps; rep++) {
          for (const table of variants) {
            await db.query(`TRUNCATE ${table}`);
            if (queues[table]) await db.query(`TRUNCATE ${queues[table]}`);
            if (!ctx.quick) await db.query('CHECKPOINT');
            const sql = kind === 'insert' ? insertSelectSql(table, n) : `COPY ${table} (${FEATURES.join(', ')}) FROM '${csv}' (FORMAT csv)`;
            const started = performance.now();
            await db.query(sql);
            ms[kind]![table]!.push(performance.now() - started);
          }
          ctx.progress(`bulk ${kind} rep ${rep + 1}/${reps}`);
        }
        const plain = ms[kind]!.t_plain!;
        out.metrics.push(metric('2 bulk ingest', '-', `${kind === 'insert' ? 'INSERT…SELECT' : 'COPY'} without deployment`, 'rows/s', plain.map((m) => n / (m / 1000))));
        for (const model of MODELS as ModelKey[]) {
          const withMs = ms[kind]![`t_${model}`]!;
          out.metrics.push(metric('2 bulk ingest', model, `${kind === 'insert' ? 'INSERT…SELECT' : 'COPY'} with deployment`, 'rows/s', withMs.map((m) => n / (m / 1000))));
          out.metrics.push(
            {
              ...metric('2 bulk ingest', model, `${kind === 'insert' ? 'INSERT…SELECT' : 'COPY'} with ÷ without`, 'ratio', withMs.map((m, i) => plain[i]! / m), { op: '>=', value: kind === 'copy' ? 0.8 : 0.7 }),
              ...(kind === 'copy' ? { goal: 'copy' } : {}),
            },
          );
        }
      }
      out.notes.push(
        `${n.toLocaleString('en-US')} rows of 30 random real features per statement; each repetition runs without, with logreg, with gbm back to back (TRUNCATE of table and queue and a CHECKPOINT before each); the ratio is taken within a repetition. No worker runs, so this is the cost of the statement trigger (transition table → one queue INSERT) alone. COPY reads a CSV file written by the server (COPY … FROM '<file>'), so no client is in the timing.`,
      );
    } finally {
      await db.query(`COPY (SELECT 1 WHERE false) TO '${csv}'`).catch(() => undefined);
      if (ctx.server.kind !== 'given') await rm(csv, { force: true }); // the server's /tmp is ours
      await db.close();
    }
  },
};
