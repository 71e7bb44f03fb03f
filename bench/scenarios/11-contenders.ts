import pg from 'pg';
import { runBatchJob, type BatchJobRun } from '../lib/batch-job.js';
import { findPostmaster, treeCpuSeconds } from '../lib/cpu.js';
import { pick, type Context, type Scenario } from '../lib/context.js';
import { createFeatureTable, deploy, FEATURES, freshDatabase, insertSelectSql, modelPath, MODELS, type BenchDatabase } from '../lib/db.js';
import { drainNotify, queueRows } from '../lib/drain.js';
import { readPathLimit, savePredictions, writePathLimit } from '../lib/limits.js';
import { preparePythonVenv, startPythonService, type PythonSetup } from '../lib/python-service.js';
import { batchedDrain, startRestService, type RestService } from '../lib/rest.js';
import { fmt, metric, type ModelKey, type ScenarioOutcome, type Target } from '../lib/result.js';
import { checkScored, sampleRows, type Agreement } from '../lib/scored-check.js';
import { summarize, waitUntil } from '../lib/stats.js';
import { WORKER_DEFAULTS } from '../lib/worker.js';
import { Worker } from '../../src/worker/worker.js';

const SCENARIO = '11 contenders';
const CHUNK = 10_000;
/** Every 97th row of the data is scored by pgscore too, for the contenders to be compared with. */
const SAMPLE_STEP = 97;
/**
 * From this size on the plain batch job runs in the first round only: without a range its UPDATE
 * hashes the whole table for every chunk (see the plans in the notes), so its time grows with
 * the square of the rows: about 1.5 min per run at 1M, extrapolated from 50k runs, and three
 * rounds of it would take the full run past its 25 minutes.
 */
const PLAIN_ONCE_FROM = 1_000_000;

type Key = 'pgscore' | 'pgscoreLean' | 'pgscoreWal' | 'plain' | 'ranged' | 'writeLimit' | 'readLimit' | 'nodeRest' | 'fastapi';

interface Contender {
  readonly key: Key;
  readonly label: string;
  /** pgscore ÷ this contender, as the ratio metric reads; its target if it has one. */
  readonly ratio?: string;
  readonly target?: Target;
}

/** In the order each round runs them. */
const CONTENDERS: readonly Contender[] = [
  { key: 'pgscore', label: 'pgscore, one notify worker' },
  { key: 'pgscoreLean', label: 'pgscore, one notify worker, prediction log and provenance off (the batch job\'s work)' },
  { key: 'pgscoreWal', label: 'pgscore, capture from the WAL, one notify worker (reads the slot, then drains)' },
  { key: 'plain', label: 'batch job, plain UPDATE … FROM', ratio: 'pgscore ÷ batch job (plain)' },
  { key: 'ranged', label: 'batch job, ranged UPDATE … FROM', ratio: 'pgscore ÷ batch job (ranged)', target: { op: '>=', value: 1.2 } },
  { key: 'writeLimit', label: 'write-path limit (ranged UPDATE alone)', ratio: 'pgscore ÷ write-path limit', target: { op: '>=', value: 0.5 } },
  { key: 'readLimit', label: 'read-path limit (binary COPY out)', ratio: 'pgscore ÷ read-path limit' },
  { key: 'nodeRest', label: 'Node REST service + loop, 1,000 rows/request', ratio: 'pgscore ÷ Node REST loop' },
  { key: 'fastapi', label: 'FastAPI service + loop, 1,000 rows/request', ratio: 'pgscore ÷ FastAPI loop' },
];

/** What one (model, rows) pair keeps across its rounds. */
interface Tally {
  readonly rates: Map<Key, number[]>;
  readonly jobs: Map<'plain' | 'ranged', BatchJobRun[]>;
  readonly agreement: Map<Key, Agreement[]>;
  /** Postgres CPU (the postmaster's whole process tree: backends, walwriter, checkpointer, autovacuum) per row, µs. */
  readonly cpu: Map<Key, number[]>;
}

/** Contenders whose Postgres CPU per row is measured: the database is the part that does not scale out. */
const CPU_MEASURED: readonly Key[] = ['pgscore', 'pgscoreLean', 'pgscoreWal', 'ranged', 'writeLimit'];

/** Runs `work` (which returns the rows it handled) and returns Postgres CPU µs per row, NaN when the server is not local. */
async function postgresCpuPerRow(postmaster: number | undefined, work: () => Promise<number>): Promise<number> {
  const before = postmaster === undefined ? undefined : await treeCpuSeconds(postmaster);
  const rows = await work();
  const after = postmaster === undefined ? undefined : await treeCpuSeconds(postmaster);
  return before === undefined || after === undefined ? Number.NaN : ((after - before) * 1e6) / rows;
}

/** A table made ready for a timed run alike for every contender: statistics, visibility map, clean buffers. */
async function settle(db: BenchDatabase, table: string): Promise<void> {
  await db.query(`VACUUM ANALYZE ${table}`);
  await db.query('CHECKPOINT');
}

/** The round's data, with the ids of the source (so the sample scored by pgscore lines up). */
async function refill(db: BenchDatabase, table: string, source: string): Promise<void> {
  const columns = ['id', ...FEATURES].join(', ');
  await db.query(`TRUNCATE ${table}`);
  await db.query(`INSERT INTO ${table} (${columns}) SELECT ${columns} FROM ${source} ORDER BY id`);
  await settle(db, table);
}

const perSecond = (rows: number, started: number) => rows / ((performance.now() - started) / 1000);

interface Services {
  /** The database of the WAL-captured deployment: its slot is read only during its own drain. */
  readonly walDb: BenchDatabase;
  readonly node: RestService;
  readonly fastapi: RestService | undefined;
  /** The postmaster's pid, when the server runs on this machine (for Postgres CPU per row). */
  readonly postmaster: number | undefined;
}

/**
 * Runs a worker on the WAL-captured database until its slot has read everything written so far
 * (creating the slot the first time), so that a timed drain reads only its own rows' WAL.
 */
async function catchUp(db: BenchDatabase, ctx: Context): Promise<void> {
  const worker = new Worker(db.url, WORKER_DEFAULTS, ctx.log);
  await worker.start();
  try {
    const [{ lsn }] = (await db.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn')) as [{ lsn: string }];
    await waitUntil(async () => (await db.query<{ done: boolean }>(
      'SELECT confirmed_flush_lsn >= $1::pg_lsn AS done FROM pg_replication_slots WHERE slot_name = ml._capture_slot()', [lsn]))[0]?.done === true,
    'the WAL capture to catch up', 120_000, 50);
  } finally {
    await worker.stop();
  }
}

/** One round: every contender once, in CONTENDERS order, each on a freshly filled table. */
async function round(ctx: Context, db: BenchDatabase, model: ModelKey, n: number, first: boolean, services: Services, tally: Tally, notes: string[]): Promise<void> {
  const [pgTable, work, rest, reference, source, saved] = [`c_${model}_pgscore`, `c_${model}_work`, `c_${model}_rest`, `c_${model}_reference`, 'c_source', `c_${model}_saved`];
  const record = (key: Key, rate: number) => {
    tally.rates.get(key)!.push(rate);
    ctx.progress(`contenders ${model} ${n}: ${key} ${Math.round(rate)} rows/s`);
  };
  const agree = async (table: string, key: Key) => tally.agreement.get(key)!.push(await checkScored(db, table, n, reference, key));

  await db.query(`TRUNCATE ${pgTable}`);
  // Every drain appends to an empty prediction log (pgscore's default), as in scenario 9.
  await db.query('TRUNCATE ml._prediction_batches');
  await queueRows(db, pgTable, n);
  await settle(db, pgTable);
  const cpu = (key: Key, perRow: number) => tally.cpu.get(key)!.push(perRow);
  let drained = { rowsPerSec: Number.NaN };
  cpu('pgscore', await postgresCpuPerRow(services.postmaster, async () => {
    drained = await drainNotify(db, pgTable, n, ctx.log);
    return n;
  }));
  record('pgscore', drained.rowsPerSec);
  const unscored = await db.query<{ n: string }>(`SELECT count(*) AS n FROM ${pgTable} WHERE label IS NULL OR p1 IS NULL`);
  if (Number(unscored[0]!.n) !== 0) throw new Error(`pgscore left ${unscored[0]!.n} rows of ${pgTable} unscored`);

  const leanTable = `${pgTable}_lean`;
  await db.query(`TRUNCATE ${leanTable}`);
  await queueRows(db, leanTable, n);
  await settle(db, leanTable);
  let lean = { rowsPerSec: Number.NaN };
  cpu('pgscoreLean', await postgresCpuPerRow(services.postmaster, async () => {
    lean = await drainNotify(db, leanTable, n, ctx.log);
    return n;
  }));
  record('pgscoreLean', lean.rowsPerSec);
  const leanUnscored = await db.query<{ n: string }>(`SELECT count(*) AS n FROM ${leanTable} WHERE label IS NULL OR p1 IS NULL`);
  if (Number(leanUnscored[0]!.n) !== 0) throw new Error(`pgscore left ${leanUnscored[0]!.n} rows of ${leanTable} unscored`);

  // Capture from the WAL: the slot caught up before the load, the rows written with no worker
  // running (they wait in the WAL), then one worker reads them from the slot and drains them.
  const { walDb } = services;
  const walTable = `${pgTable}_wal`;
  await walDb.query(`TRUNCATE ${walTable}`);
  await walDb.query('TRUNCATE ml._prediction_batches');
  await catchUp(walDb, ctx);
  await queueRows(walDb, walTable, n);
  await settle(walDb, walTable);
  let walDrained = { rowsPerSec: Number.NaN };
  cpu('pgscoreWal', await postgresCpuPerRow(services.postmaster, async () => {
    walDrained = await drainNotify(walDb, walTable, n, ctx.log);
    return n;
  }));
  record('pgscoreWal', walDrained.rowsPerSec);
  const walUnscored = await walDb.query<{ n: string }>(`SELECT count(*) AS n FROM ${walTable} WHERE label IS NULL OR p1 IS NULL`);
  if (Number(walUnscored[0]!.n) !== 0) throw new Error(`pgscore left ${walUnscored[0]!.n} rows of ${walTable} unscored`);

  for (const variant of ['plain', 'ranged'] as const) {
    if (variant === 'plain' && !first && n >= PLAIN_ONCE_FROM) {
      tally.rates.get(variant)!.push(Number.NaN);
      continue;
    }
    await refill(db, work, source);
    const started = performance.now();
    let job: BatchJobRun | undefined;
    const perRow = await postgresCpuPerRow(services.postmaster, async () => {
      job = await runBatchJob(db.url, work, modelPath(model), { ranged: variant === 'ranged', chunkRows: CHUNK, explain: first });
      return job.rows;
    });
    if (!job) throw new Error('the batch job did not run');
    const rate = perSecond(job.rows, started);
    if (variant === 'ranged') cpu('ranged', perRow);
    await agree(work, variant);
    record(variant, rate);
    tally.jobs.get(variant)!.push(job);
    if (variant === 'plain' && first) await savePredictions(db.pool, work, saved);
  }

  await refill(db, work, source);
  let started = performance.now();
  let written = 0;
  cpu('writeLimit', await postgresCpuPerRow(services.postmaster, async () => {
    written = await writePathLimit(db.url, work, saved, CHUNK);
    return written;
  }));
  const writeRate = perSecond(written, started);
  if (written !== n) throw new Error(`the write-path limit updated ${written} rows, not ${n}`);
  await agree(work, 'writeLimit');
  record('writeLimit', writeRate);

  await refill(db, work, source);
  started = performance.now();
  const bytes = await readPathLimit(db.url, work);
  const readRate = perSecond(n, started);
  // Header 19 + per row: field count 2, id 4+8, 30 × (4+4) + trailer 2: every row was read.
  const expected = 19 + n * (2 + 12 + FEATURES.length * 8) + 2;
  if (bytes !== expected) throw new Error(`the read-path limit read ${bytes} bytes, expected ${expected}`);
  record('readLimit', readRate);

  for (const [key, service] of [['nodeRest', services.node], ['fastapi', services.fastapi]] as const) {
    if (!service) continue;
    await refill(db, rest, source);
    try {
      const loopStarted = performance.now();
      const scored = await batchedDrain(db.pool, service, rest);
      const rate = perSecond(scored, loopStarted);
      if (scored !== n) throw new Error(`the ${key} loop scored ${scored} of ${n} rows`);
      await agree(rest, key);
      record(key, rate);
    } catch (error) {
      // Python is a bench-only extra: its failures are reported, never fatal to the scenario.
      if (key !== 'fastapi') throw error;
      tally.rates.get(key)!.push(Number.NaN);
      notes.push(`FastAPI contender failed (${model}, ${n.toLocaleString('en-US')} rows): ${(error as Error).message.split('\n')[0]}`);
    }
  }
}

/** Every round of one model at one size, then its metrics, notes and shared ratios. */
async function contend(ctx: Context, db: BenchDatabase, walDb: BenchDatabase, model: ModelKey, n: number, rounds: number, python: PythonSetup, out: { metrics: ScenarioOutcome['metrics']; notes: string[] }): Promise<void> {
  const [pgTable, work, rest, reference] = [`c_${model}_pgscore`, `c_${model}_work`, `c_${model}_rest`, `c_${model}_reference`];
  await createFeatureTable(db, pgTable);
  await deploy(db, pgTable, model);
  await createFeatureTable(walDb, `${pgTable}_wal`);
  await deploy(walDb, `${pgTable}_wal`, model, `${pgTable}_wal`, { capture: 'wal' });
  await createFeatureTable(db, `${pgTable}_lean`);
  await deploy(db, `${pgTable}_lean`, model, `${pgTable}_lean`, { log_sample: 0, provenance: false });
  await createFeatureTable(db, work);
  // The REST loops find unscored rows through a partial index, as in scenario 6.
  await createFeatureTable(db, rest, { unscoredIndex: true });
  // pgscore scores a sample of the same data the other contenders get; this untimed drain also
  // warms the process up, so that the first timed drain does not carry its cold start.
  await createFeatureTable(db, reference);
  await deploy(db, reference, model);
  const sample = await sampleRows(db, 'c_source', reference, SAMPLE_STEP);
  await drainNotify(db, reference, sample, ctx.log);
  await db.query('SELECT ml.undeploy($1)', [reference]);

  const node = await startRestService(modelPath(model));
  let fastapi: RestService | undefined;
  if (python.ok) {
    try {
      fastapi = await startPythonService(python.python, modelPath(model));
    } catch (error) {
      out.notes.push(`FastAPI contender skipped (${model}, ${n.toLocaleString('en-US')} rows): ${(error as Error).message}`);
    }
  }
  const tally: Tally = {
    rates: new Map(CONTENDERS.map((c) => [c.key, []])),
    jobs: new Map([['plain', []], ['ranged', []]]),
    agreement: new Map(CONTENDERS.map((c) => [c.key, []])),
    cpu: new Map(CONTENDERS.map((c) => [c.key, []])),
  };
  const found = await findPostmaster(ctx.server.adminUrl);
  const postmaster = found.ok ? found.pid : undefined;
  if (!found.ok) out.notes.push(`Postgres CPU per row not measured: ${found.reason}`);
  try {
    for (let r = 0; r < rounds; r++) await round(ctx, db, model, n, r === 0, { walDb, node, fastapi, postmaster }, tally, out.notes);
  } finally {
    await Promise.allSettled([node.stop(), fastapi?.stop()]);
    await db.query('SELECT ml.undeploy($1)', [pgTable]);
    await db.query('SELECT ml.undeploy($1)', [`${pgTable}_lean`]);
    await walDb.query('SELECT ml.undeploy($1)', [`${pgTable}_wal`]);
    await walDb.query(`DROP TABLE IF EXISTS ${pg.escapeIdentifier(`${pgTable}_wal`)}`);
    for (const table of [pgTable, `${pgTable}_lean`, work, rest, reference, `c_${model}_saved`]) await db.query(`DROP TABLE IF EXISTS ${pg.escapeIdentifier(table)}`);
  }

  const size = `${n.toLocaleString('en-US')} rows`;
  const pgscore = tally.rates.get('pgscore')!;
  for (const c of CONTENDERS) {
    const rates = tally.rates.get(c.key)!;
    if (!rates.some(Number.isFinite)) continue;
    out.metrics.push(metric(SCENARIO, model, `${size}: ${c.label}, rows/s`, 'rows/s', rates));
    ctx.shared.set(`contenders.${model}.${n}.rate.${c.key}`, summarize(rates.filter(Number.isFinite)).median);
  }
  for (const c of CONTENDERS) {
    if (!c.ratio) continue;
    // Ratios within a round, where both ran under the same conditions, then their median.
    const ratios = tally.rates.get(c.key)!.map((rate, i) => pgscore[i]! / rate);
    if (!ratios.some(Number.isFinite)) continue;
    out.metrics.push(metric(SCENARIO, model, `${size}: ${c.ratio}`, 'ratio', ratios, c.target));
    ctx.shared.set(`contenders.${model}.${n}.${c.key}`, summarize(ratios.filter(Number.isFinite)).median);
  }
  // Postgres CPU per row beside each drain, and pgscore's ÷ the ranged batch job's (goal: ≤ 1).
  for (const key of CPU_MEASURED) {
    const perRow = tally.cpu.get(key)!;
    if (!perRow.some(Number.isFinite)) continue;
    const c = CONTENDERS.find((x) => x.key === key)!;
    out.metrics.push(metric(SCENARIO, model, `${size}: ${c.label}, Postgres CPU per row`, 'µs', perRow));
  }
  for (const key of ['pgscore', 'pgscoreLean', 'pgscoreWal'] as const) {
    const ratios = tally.cpu.get(key)!.map((perRow, i) => perRow / tally.cpu.get('ranged')![i]!);
    if (!ratios.some(Number.isFinite)) continue;
    const who = { pgscore: 'pgscore', pgscoreLean: 'pgscore (log and provenance off)', pgscoreWal: 'pgscore (capture from the WAL)' }[key];
    out.metrics.push(metric(SCENARIO, model, `${size}: Postgres CPU per row, ${who} ÷ batch job (ranged)`, 'ratio', ratios, key === 'pgscore' ? { op: '<=', value: 1 } : undefined));
    if (key === 'pgscore') ctx.shared.set(`contenders.${model}.${n}.cpu`, summarize(ratios.filter(Number.isFinite)).median);
  }
  // The same two goals for pgscore doing only the batch job's work (no log, no provenance): what
  // those defaults cost, beside what the pipeline itself does.
  for (const [variant, who] of [['pgscoreLean', 'pgscore (log and provenance off)'], ['pgscoreWal', 'pgscore (capture from the WAL)']] as const) {
    const rates = tally.rates.get(variant)!;
    for (const key of ['ranged', 'writeLimit'] as const) {
      const c = CONTENDERS.find((x) => x.key === key)!;
      const ratios = tally.rates.get(key)!.map((rate, i) => rates[i]! / rate);
      if (!ratios.some(Number.isFinite)) continue;
      out.metrics.push(metric(SCENARIO, model, `${size}: ${c.ratio!.replace('pgscore', who)}`, 'ratio', ratios));
    }
  }
  const jobs = (['plain', 'ranged'] as const).map((variant) => {
    const runs = tally.jobs.get(variant)!;
    const chunks = runs.reduce((a, j) => a + j.chunks, 0);
    const per = (phase: keyof BatchJobRun['phases']) => fmt(runs.reduce((a, j) => a + j.phases[phase], 0) / chunks);
    return `${variant} ${per('fetchMs')} / ${per('scoreMs')} / ${per('writeMs')} ms`;
  });
  const plans = (['plain', 'ranged'] as const).map((variant) => `${variant}: \`${(tally.jobs.get(variant)![0]?.plan ?? '?').replace(/\n(->\s*)?/g, ' → ')}\``);
  const agreement = CONTENDERS.filter((c) => tally.agreement.get(c.key)!.length > 0).map((c) => {
    const runs = tally.agreement.get(c.key)!;
    return `${c.key} ${runs.reduce((a, x) => a + x.inexact, 0)} of ${runs.reduce((a, x) => a + x.sample, 0)} p1 not bit-identical (max |Δ| ${fmt(Math.max(...runs.map((x) => x.maxDiff)))})`;
  });
  out.notes.push(
    `${model}, ${size}: batch job per 10k-row chunk, waiting for the FETCH / scoring / COPY + UPDATE + COMMIT (the last overlaps the first two of the next chunk): ${jobs.join('; ')}. UPDATE plans of the first chunk (first round): ${plans.join('; ')}. Agreement with pgscore on its ${sample}-row sample (labels always equal): ${agreement.join('; ')}.`,
  );
}

export const contenders: Scenario = {
  id: '11',
  title: 'Contenders: backlog drain beside what a user would write instead',
  async run(ctx, out) {
    // BENCH_CONTENDER_ROWS=300000 runs one size only (e.g. a second server's run).
    const sizes = process.env.BENCH_CONTENDER_ROWS
      ? process.env.BENCH_CONTENDER_ROWS.split(',').map(Number)
      : pick(ctx, [50_000], [300_000, 1_000_000]);
    const rounds = pick(ctx, 1, 3);
    const python = await preparePythonVenv(ctx.progress);
    ctx.progress(python.ok ? `python: ${python.note}` : `python: FastAPI contender skipped: ${python.reason}`);
    const db = await freshDatabase(ctx.server, 'contenders');
    const walDb = await freshDatabase(ctx.server, 'contenderswal');
    try {
      for (const n of sizes) {
        // One data set per size: every contender but pgscore (which queues its own rows, as in
        // scenario 4) gets a copy of it, and pgscore scores a sample of it for comparison.
        await createFeatureTable(db, 'c_source');
        for (let done = 0; done < n; done += 100_000) await db.query(insertSelectSql('c_source', Math.min(100_000, n - done)));
        for (const model of MODELS) await contend(ctx, db, walDb, model, n, rounds, python, out);
      }
    } finally {
      await db.close();
      await walDb.close();
    }
    out.notes.push(...methodNotes(ctx, sizes, rounds, python));
  },
};

function methodNotes(ctx: Context, sizes: readonly number[], rounds: number, python: PythonSetup): string[] {
  return [
    `Sizes ${sizes.map((n) => n.toLocaleString('en-US')).join(' and ')} rows, ${rounds} round(s); each round runs every contender in the order listed, each on a table freshly filled with the same number of rows (TRUNCATE, INSERT, then VACUUM ANALYZE and CHECKPOINT before the timed run). Ratios are pgscore ÷ contender within a round, then the median over rounds. All in one process with the bench's embedded Postgres, on the same 2 shared cores; onnxruntime with 1 intra-op thread everywhere.`,
    `pgscore: exactly scenario 4's drain: ml.deploy with the defaults (so it also writes its provenance columns and appends every prediction to ml._predictions, truncated before each drain, which no contender does), rows queued by INSERT … SELECT with no worker running, then one notify worker (defaults: batch 1000, concurrency 2) timed from start() until every row is written. Its data is random like the others' but not the same rows; a ${SAMPLE_STEP}th of the contenders' data is scored by pgscore separately (untimed, also warming the process up) and every other contender's predictions are compared with it (labels equal, p1 within 1e-5) after its run, besides a check that all rows have label and p1. pgscore with capture from the WAL: the same, deployed with "capture": "wal" in a database of its own; before the rows are written a worker runs until the slot has read all WAL so far, then the rows are written with no worker running (they wait in the WAL, not in the queue), and one worker is timed from start() until every row is written: reading the slot (the walsender's logical decoding, which the Postgres CPU includes), queueing the keys, and the drain.`,
    `Batch job (bench/lib/batch-job.ts, no pgscore code): a reader connection runs \`DECLARE … NO SCROLL CURSOR FOR SELECT id, f0..f29 FROM t ORDER BY id\` in one REPEATABLE READ READ ONLY transaction and \`FETCH 10000\` (array rows); each chunk goes into one Float32Array and one session.run (onnxruntime-node, the same .onnx, label and probabilities[:,1]); a writer connection runs, per chunk, BEGIN, a binary \`COPY predictions (id, label, p1) FROM STDIN\` (pg-copy-streams) into a temp table ON COMMIT DELETE ROWS, one prepared \`UPDATE t SET label = p.label, p1 = p.p1 FROM predictions p WHERE t.id = p.id\` and COMMIT. The next chunk is fetched and scored while the writer applies the one before (one chunk in the writer at a time). Ranged adds \`AND t.id BETWEEN <first> AND <last id of the chunk>\`. Timed from before the session is created to the last commit (in the first round that includes one EXPLAIN of the first chunk's UPDATE).${ctx.quick ? '' : ` From ${PLAIN_ONCE_FROM.toLocaleString('en-US')} rows on, the plain variant runs in the first round only (its UPDATE scans the whole table for every chunk).`}`,
    `Write-path limit (bench/lib/limits.ts): the batch job's predictions, saved untimed in an unlogged table keyed by id, applied to a freshly filled table by \`UPDATE t … FROM saved p WHERE t.id = p.id AND t.id BETWEEN lo AND hi AND p.id BETWEEN lo AND hi\`, one 10k-id range per statement, each its own transaction; timed over the whole table. Read-path limit: \`COPY (SELECT id, f0..f29 FROM t ORDER BY id) TO STDOUT (FORMAT binary)\` read to the end by the client (pg-copy-streams), bytes counted (checked to be every row) and dropped.`,
    `REST loops (bench/lib/rest.ts, scenario 6's batched loop): read 1,000 unscored rows (\`… WHERE p1 IS NULL ORDER BY id LIMIT 1000\`, partial index on unscored rows), one JSON POST, one \`UPDATE … FROM unnest(…)\`, one batch at a time until none is left. Node: bench/lib/rest-server.ts (node:http + onnxruntime-node, child process). FastAPI: bench/python/service.py (FastAPI + onnxruntime + numpy under uvicorn, one worker process, uvloop + httptools, request validated by pydantic from the raw body, response by json.dumps), from a venv built from bench/python/requirements.txt; ${python.ok ? python.note : `skipped: ${python.reason}`}.`,
  ];
}
