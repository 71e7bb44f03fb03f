import type { Logger } from '../../src/log.js';
import { startMetrics } from '../../src/metrics/metrics.js';
import type { MetricsServer } from '../../src/metrics/server.js';
import type { Worker } from '../../src/worker/worker.js';
import { pick, type Scenario } from '../lib/context.js';
import { createFeatureTable, deploy, deploymentId, FEATURES, freshDatabase, insertSelectSql, MODELS, type BenchDatabase } from '../lib/db.js';
import { drainNotify, queueRows, type DrainRun } from '../lib/drain.js';
import { metric, type ModelKey } from '../lib/result.js';

const SCENARIO = '10 monitoring cost';

/** An aggressive Prometheus: its default interval is 1 minute, many setups use 15 s. */
const SCRAPE_EVERY_MS = 1_000;

/** The "training data" the baselines are taken from: the bench's own distribution. */
const TRAINING_TABLE = 't_training';
const TRAINING_ROWS = 10_000;

interface Variant {
  readonly key: 'off' | 'on';
  /** How the variant reads in metric names. */
  readonly label: string;
  readonly options: Record<string, unknown>;
  /** Whether the drain runs with a metrics server, scraped every second. */
  readonly scraped: boolean;
}

/** The first is the baseline of the ratio. */
const VARIANTS: readonly Variant[] = [
  { key: 'off', label: 'monitoring off', options: { drift: false }, scraped: false },
  { key: 'on', label: 'monitoring on', options: {}, scraped: true },
];

interface Scrapes {
  readonly statuses: number[];
  readonly problems: string[];
}

/**
 * Serves the worker's /metrics (as `pgscore worker --metrics-port` does) and scrapes it at once,
 * then every SCRAPE_EVERY_MS until stopped; one scrape at a time, as Prometheus does per target.
 */
async function serveAndScrape(worker: Worker, url: string, log: Logger): Promise<{ stop(): Promise<Scrapes> }> {
  let server: MetricsServer | undefined;
  // The embedded Postgres also takes a random port of this range: try another on a collision.
  for (let attempt = 0; !server; attempt++) {
    const port = 20_000 + Math.floor(Math.random() * 20_000);
    try {
      server = await startMetrics('worker', worker, url, { metricsHost: '127.0.0.1', metricsPort: port }, log);
    } catch (error) {
      if (attempt >= 5) throw error;
    }
    if (!server && attempt >= 5) throw new Error('startMetrics served nothing');
  }
  const metricsUrl = server.url;
  const scrapes: Scrapes = { statuses: [], problems: [] };
  let stopped = false;
  let wake: (() => void) | undefined;
  let timer: NodeJS.Timeout | undefined;
  const loop = (async () => {
    for (let next = performance.now(); !stopped; ) {
      try {
        const response = await fetch(metricsUrl);
        const body = await response.text();
        scrapes.statuses.push(response.status);
        if (response.ok && !body.includes('pgscore_rows_scored_total')) scrapes.problems.push('a scrape without pgscore_rows_scored_total');
      } catch (error) {
        scrapes.problems.push(`a scrape failed: ${(error as Error).message}`);
      }
      next += SCRAPE_EVERY_MS;
      await new Promise<void>((resolve) => {
        wake = resolve;
        timer = setTimeout(resolve, Math.max(0, next - performance.now()));
      });
    }
  })();
  return {
    async stop() {
      stopped = true;
      clearTimeout(timer);
      wake?.();
      await loop;
      await server.close();
      return scrapes;
    },
  };
}

/** One drain of `table`; the scraped variant's metrics server lives from before start() until after stop(). */
async function drain(db: BenchDatabase, table: string, n: number, variant: Variant, log: Logger): Promise<{ run: DrainRun; scrapes?: Scrapes }> {
  if (!variant.scraped) return { run: await drainNotify(db, table, n, log) };
  const scraping: { stop(): Promise<Scrapes> }[] = [];
  let run: DrainRun;
  let scrapes: Scrapes | undefined;
  try {
    run = await drainNotify(db, table, n, log, { onWorker: async (worker) => void scraping.push(await serveAndScrape(worker, db.url, log)) });
  } finally {
    [scrapes] = await Promise.all(scraping.map((s) => s.stop()));
  }
  return { run, scrapes };
}

/**
 * A variant whose monitoring silently did nothing would show as free. After each drain, "on" must
 * have counted every row's 30 inputs for ml.drift (and its outputs too, once the warm-up drain
 * completed the baseline with its first predictions) and every scrape must have answered 200;
 * "off" must have counted nothing.
 */
async function checkDrained(db: BenchDatabase, table: string, variant: Variant, n: number, outputsCounted: boolean, scrapes?: Scrapes): Promise<void> {
  const counted = await db.query<{ kind: string; feature: string; rows: string }>(
    'SELECT kind, feature, sum(rows) AS rows FROM ml._drift_counts WHERE deployment_id = $1 GROUP BY kind, feature',
    [await deploymentId(db, table)],
  );
  if (variant.key === 'off') {
    if (counted.length > 0) throw new Error(`${variant.label}: ml._drift_counts holds ${counted.length} feature(s) of ${table}, expected none`);
    return;
  }
  const inputs = counted.filter((c) => c.kind === 'input');
  const outputs = counted.filter((c) => c.kind === 'output');
  const short = (cs: typeof counted) => cs.filter((c) => Number(c.rows) !== n).map((c) => `${c.feature}: ${c.rows}`);
  if (inputs.length !== FEATURES.length || short(inputs).length > 0) {
    throw new Error(`${variant.label}: ml._drift_counts counts ${inputs.length} input feature(s) of ${table}, expected ${FEATURES.length} of ${n} rows each (${short(inputs).slice(0, 3).join(', ')})`);
  }
  if (outputsCounted && (outputs.length === 0 || short(outputs).length > 0)) {
    throw new Error(`${variant.label}: ml._drift_counts counts ${outputs.length} output feature(s) of ${table}, expected each of ${n} rows (${short(outputs).join(', ')})`);
  }
  if (!scrapes || scrapes.statuses.length === 0) throw new Error(`${variant.label}: no scrape of the worker's /metrics`);
  const bad = scrapes.statuses.filter((s) => s !== 200);
  if (bad.length > 0 || scrapes.problems.length > 0) {
    throw new Error(`${variant.label}: ${bad.length} of ${scrapes.statuses.length} scrapes answered ${bad.join(', ') || '200'}; ${scrapes.problems.slice(0, 3).join('; ')}`);
  }
}

export const monitoringCost: Scenario = {
  id: '10',
  title: 'Monitoring cost (drift counts and a metrics scrape every second, on the backlog drain)',
  async run(ctx, out) {
    const n = pick(ctx, 30_000, 300_000);
    const reps = pick(ctx, 1, 3);
    // The quick run stays short: the logistic model only.
    const models = pick<readonly ModelKey[]>(ctx, ['logreg'], MODELS);
    const db = await freshDatabase(ctx.server, 'monitoring');
    try {
      await createFeatureTable(db, TRAINING_TABLE);
      await db.query(insertSelectSql(TRAINING_TABLE, TRAINING_ROWS));
      for (const model of models) {
        // The version's input summaries, as `ml.set_baseline` after training; the output
        // summaries come from the first predictions (the warm-up drain's).
        await db.query('SELECT ml.set_baseline($1, $2)', [model, `SELECT ${FEATURES.join(', ')} FROM ${TRAINING_TABLE}`]);
        const tables = VARIANTS.map((v) => `t_${model}_${v.key}`);
        for (const [i, variant] of VARIANTS.entries()) {
          await createFeatureTable(db, tables[i]!);
          await deploy(db, tables[i]!, model, tables[i]!, variant.options);
        }
        // One untimed drain first, monitored (every path runs): the first worker of the process
        // pays for cold code and caches, and this drain completes the baseline's outputs.
        const on = VARIANTS.length - 1;
        await db.query('TRUNCATE ml._prediction_batches, ml._drift_counts');
        await queueRows(db, tables[on]!, n);
        const warm = await drain(db, tables[on]!, n, VARIANTS[on]!, ctx.log);
        await checkDrained(db, tables[on]!, VARIANTS[on]!, n, false, warm.scrapes);
        // rates[variant][rep], the variants interleaved (off, on, off, on …) so that drift on the
        // machine hits both alike.
        const rates: number[][] = VARIANTS.map(() => []);
        for (let rep = 0; rep < reps; rep++) {
          for (const [i, variant] of VARIANTS.entries()) {
            const table = tables[i]!;
            await db.query(`TRUNCATE ${table}`);
            // Both variants log every prediction: each drain starts on an empty log (and no counts).
            await db.query('TRUNCATE ml._prediction_batches, ml._drift_counts');
            await queueRows(db, table, n);
            await db.query('CHECKPOINT');
            const { run, scrapes } = await drain(db, table, n, variant, ctx.log);
            rates[i]!.push(run.rowsPerSec);
            await checkDrained(db, table, variant, n, true, scrapes);
            const scraped = scrapes ? `, ${scrapes.statuses.length} scrapes` : '';
            ctx.progress(`monitoring ${model} ${variant.label} rep ${rep + 1}/${reps}: ${Math.round(run.rowsPerSec)} rows/s${scraped}`);
          }
        }
        // The next model's workers then load and watch only their own deployments.
        for (const table of tables) await db.query('SELECT ml.undeploy($1)', [table]);

        for (const [i, variant] of VARIANTS.entries()) {
          out.metrics.push(metric(SCENARIO, model, `notify worker rows/s, ${variant.label}`, 'rows/s', rates[i]!));
        }
        const off = rates[0]!;
        const ratio = rates[1]!.map((r, rep) => r / off[rep]!);
        out.metrics.push(metric(SCENARIO, model, 'monitoring on ÷ off', 'ratio', ratio, { op: '>=', value: 0.9, text: '≥ 0.9 (goal)' }));
      }
      out.notes.push(
        `Two deployments of the same model on two identical tables. Off = \`{"drift": false}\` and no metrics server. On = the defaults (drift on: the worker bins every row's 30 inputs and its outputs by the version's baseline and flushes per-minute counts to ml._drift_counts every 5 s) plus a metrics server (startMetrics, as \`--metrics-port\` serves it) in the worker's process, scraped at once and then every ${SCRAPE_EVERY_MS / 1000} s during the drain, one scrape at a time; each scrape reads ml.status, and the first of each drain also ml.drift and ml.performance (then at most once a minute). The baseline's inputs come from \`ml.set_baseline\` over a ${TRAINING_ROWS.toLocaleString('en-US')}-row training table of the same distribution; its outputs from the first 1,000 predictions of the warm-up drain. After each drain, "on" is checked to have counted every row of every input and output feature and to have had every scrape answered 200 with the worker's metrics; "off" to have counted nothing.`,
        `Each drain as in scenario 4: ${n.toLocaleString('en-US')} rows queued by INSERT … SELECT with no worker running, CHECKPOINT, then one notify worker (defaults) timed from start() until every row is written; the metrics server starts before start() and outside the timing. ${reps} repetition(s), off and on interleaved; the ratio is taken within a repetition. Before each drain the table, ml._predictions and ml._drift_counts are truncated. One untimed monitored drain comes first (the process's cold start; it completes the baseline).`,
        `Common to both variants: the prediction log (defaults, every prediction; its cost is scenario 9's) and ml._check_alerts every 10 s in every worker (a drain shorter than 10 s never runs it; with drift on it has counts to evaluate). The scraper runs in the bench's process, the worker's own, so its client side is counted too.${ctx.quick ? ' Quick runs: the logistic model only.' : ''}`,
      );
    } finally {
      await db.close();
    }
  },
};
