import { pick, type Scenario } from '../lib/context.js';
import { createFeatureTable, freshDatabase, insertSelectSql, modelPath, MODELS } from '../lib/db.js';
import { measureLatency } from '../lib/latency.js';
import { metric } from '../lib/result.js';
import { batchedDrain, batchedPoller, perRowLoop, startRestService } from '../lib/rest.js';
import { latencyMetrics, latencyOptions } from './5-latency.js';

const POLL_MS = 100;

export const restPattern: Scenario = {
  id: '6',
  title: 'The REST-service pattern (same model behind node:http + an application loop) vs pgscore',
  async run(ctx, out) {
    const reps = pick(ctx, 2, 3);
    const perRowN = pick(ctx, 2_000, 20_000);
    const batchedN = pick(ctx, 30_000, 200_000);
    const latencySeconds = pick(ctx, 5, 20);
    const db = await freshDatabase(ctx.server, 'rest');
    try {
      for (const model of MODELS) {
        const table = `t_${model}`;
        await createFeatureTable(db, table, { unscoredIndex: true });
        const rest = await startRestService(modelPath(model));
        try {
          const pgscore = ctx.shared.get(`drain.notify.${model}`) ?? Number.NaN;
          const perRow: number[] = [];
          const batched: number[] = [];
          for (let rep = 0; rep < reps; rep++) {
            for (const [kind, n] of [['row', perRowN], ['batch', batchedN]] as const) {
              await db.query(`TRUNCATE ${table}`);
              await db.query(insertSelectSql(table, n));
              await db.query(`VACUUM ANALYZE ${table}`);
              const started = performance.now();
              const scored = kind === 'row' ? await perRowLoop(db.pool, rest, table, 50) : await batchedDrain(db.pool, rest, table);
              const rate = scored / ((performance.now() - started) / 1000);
              if (scored !== n) throw new Error(`REST ${kind} loop scored ${scored} of ${n} rows`);
              (kind === 'row' ? perRow : batched).push(rate);
            }
            ctx.progress(`rest ${model} rep ${rep + 1}/${reps}: per-row ${Math.round(perRow.at(-1)!)} rows/s, batched ${Math.round(batched.at(-1)!)} rows/s`);
          }
          out.metrics.push(metric('6 REST pattern', model, '(a) per-row REST loop, rows/s', 'rows/s', perRow));
          out.metrics.push(metric('6 REST pattern', model, '(a) pgscore drain ÷ per-row REST loop', 'ratio', perRow.map((r) => pgscore / r), { op: '>=', value: 5, text: '≥ 5×' }));
          out.metrics.push(metric('6 REST pattern', model, '(b) batched REST loop, rows/s', 'rows/s', batched));
          out.metrics.push(metric('6 REST pattern', model, '(b) pgscore drain ÷ batched REST loop', 'ratio', batched.map((r) => pgscore / r), { op: '>=', value: 1, text: '≥ 1.0×' }));
          ctx.shared.set(`rest.row.${model}`, perRow.length ? perRow.sort((a, b) => a - b)[Math.floor(perRow.length / 2)]! : Number.NaN);
          ctx.shared.set(`rest.batch.${model}`, batched.length ? batched.sort((a, b) => a - b)[Math.floor(batched.length / 2)]! : Number.NaN);

          // Latency of the batched loop polling every POLL_MS at 1k rows/s.
          await db.query(`TRUNCATE ${table}`);
          const poller = batchedPoller(db.pool, rest, table, POLL_MS);
          let run;
          try {
            run = await measureLatency(db.url, table, latencyOptions(ctx, latencySeconds));
          } finally {
            await poller.stop();
          }
          out.metrics.push(...latencyMetrics('6 REST pattern', model, `(b) batched loop (poll ${POLL_MS} ms) commit→visible`, run, {}));
          const p50 = ctx.shared.get(`latency.notify.${model}.p50`) ?? Number.NaN;
          const p99 = ctx.shared.get(`latency.notify.${model}.p99`) ?? Number.NaN;
          out.metrics.push(metric('6 REST pattern', model, '(b) pgscore p50 latency ÷ batched loop p50', 'ratio', run.windows.map((w) => p50 / w.p50), { op: '<=', value: 0.1, text: '≤ 1/10' }));
          out.metrics.push(metric('6 REST pattern', model, '(b) pgscore p99 latency ÷ batched loop p99', 'ratio', run.windows.map((w) => p99 / w.p99)));
          ctx.progress(`rest ${model} batched-loop latency p50 ${run.overall.p50.toFixed(1)} ms`);
        } finally {
          await rest.stop();
        }
      }
      out.notes.push(
        `REST service: bench/lib/rest-server.ts, a node:http server with onnxruntime-node (1 thread), run as a child process; JSON in ({"rows": [[30 numbers]…]}) and out; keep-alive client. Both loops read unscored rows with \`SELECT id, f0..f29 … WHERE p1 IS NULL ORDER BY id LIMIT 1000\` (a partial index on unscored rows is there, as a careful application would add).`,
        `(a) tutorial form: one POST per row, 50 in flight, one \`UPDATE … WHERE id = $1\` per row (pool of 20 connections); ${perRowN.toLocaleString('en-US')} rows per repetition. (b) batched: 1000 rows per POST and one \`UPDATE … FROM unnest(…)\` per batch, one batch at a time; ${batchedN.toLocaleString('en-US')} rows per repetition. pgscore's side of the ratios is the median notify backlog drain of scenario 4 (${pick(ctx, '100k', '1M')} rows).`,
        `Latency: the batched loop runs as a service that drains what is unscored and then sleeps ${POLL_MS} ms, measured exactly like scenario 5 (1k rows/s, ${latencySeconds} s); pgscore's side is scenario 5's whole-run notify p50/p99.`,
      );
    } finally {
      await db.close();
    }
  },
};
