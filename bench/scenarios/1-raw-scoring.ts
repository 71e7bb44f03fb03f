import { listActiveDeployments } from '../../src/db/statements.js';
import { loadModel } from '../../src/models/sessions.js';
import { scoreRows } from '../../src/scoring/score.js';
import { pick, type Scenario } from '../lib/context.js';
import { createFeatureTable, deploy, freshDatabase, modelBytes, MODELS } from '../lib/db.js';
import { metric } from '../lib/result.js';
import { summarize } from '../lib/stats.js';

const BATCHES = [1, 100, 1000];

/** Rows in the worker's claim layout: [key text, age_ms, xmin, v0..v29], values as pg parses real. */
function claimRows(n: number): unknown[][] {
  return Array.from({ length: n }, () => Array.from({ length: 30 }, (_, i) => Math.fround(Math.random() * (i + 1))));
}

export const rawScoring: Scenario = {
  id: '1',
  title: 'Raw scoring limit (onnxruntime-node through the worker\'s tensor code)',
  async run(ctx, out) {
    // The plan the worker would use, as ml.deploy resolved it.
    const db = await freshDatabase(ctx.server, 'raw');
    let plans;
    try {
      for (const model of MODELS) {
        await createFeatureTable(db, `t_${model}`);
        await deploy(db, `t_${model}`, model);
      }
      plans = new Map((await listActiveDeployments(db.pool)).map((d) => [d.model, d.plan]));
    } finally {
      await db.close();
    }
    const reps = pick(ctx, 3, 5);
    const seconds = pick(ctx, 0.4, 1.5);
    for (const model of MODELS) {
      const loaded = await loadModel(model, await modelBytes(model), { threads: 1 });
      const plan = plans.get(model)!;
      try {
        for (const batch of BATCHES) {
          const rows = claimRows(batch);
          for (let i = 0; i < 20; i++) await scoreRows(loaded, plan, rows); // warm-up
          const rates: number[] = [];
          for (let rep = 0; rep < reps; rep++) {
            let scored = 0;
            const started = performance.now();
            while (performance.now() - started < seconds * 1000) {
              const result = await scoreRows(loaded, plan, rows);
              scored += result.rows.length;
            }
            rates.push(scored / ((performance.now() - started) / 1000));
          }
          out.metrics.push(metric('1 raw scoring', model, `rows/s, batch ${batch}`, 'rows/s', rates));
          ctx.shared.set(`raw.${model}.${batch}`, summarize(rates).median);
        }
      } finally {
        await loaded.session.release();
      }
    }
    out.notes.push(
      `scoreRows(model, plan, rows) in a loop for ${seconds} s per repetition, one session (1 ORT thread, as the worker), rows of 30 input values as the claim decodes them; the plan is the one ml.deploy stored. Includes rows→tensor copying and tensor→columns reading, no database.`,
    );
  },
};
