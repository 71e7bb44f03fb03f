/**
 * Where the time goes, for the targets the bench misses (not part of `npm run bench`):
 *   node --import tsx bench/profile/profile.ts [experiments...]   (default: all)
 * Experiments: explain, drain, capture, oltp, bulk, latency. Uses BENCH_DATABASE_URL or its own embedded Postgres.
 * explain shows the write-back's fast form; FORM=careful shows the careful one (src/writeback/sql.ts).
 */
import { execFile } from 'node:child_process';
import { rm, writeFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { listActiveDeployments } from '../../src/db/statements.js';
import { decodeClaim } from '../../src/queue/claim.js';
import { deploymentStatements } from '../../src/queue/statements.js';
import { createLogger } from '../../src/log.js';
import { loadModel } from '../../src/models/sessions.js';
import { scoreRows } from '../../src/scoring/score.js';
import { Worker } from '../../src/worker/worker.js';
import { writePredictions } from '../../src/writeback/writeback.js';
import { createFeatureTable, deploy, FEATURES, freshDatabase, insertSelectSql, modelBytes, queueSize, SINGLE_INSERT_VALUES, startServer, type BenchDatabase } from '../lib/db.js';
import { findPostmaster, treeCpuSeconds } from '../lib/cpu.js';
import { measureLatency } from '../lib/latency.js';
import { sleep, waitUntil } from '../lib/stats.js';
import { WORKER_DEFAULTS } from '../lib/worker.js';

const run = promisify(execFile);
const log = createLogger('silent');
const which = process.argv.slice(2);
const want = (name: string) => which.length === 0 || which.includes(name);
const say = (text: string) => process.stdout.write(`${text}\n`);
const server = await startServer();

async function setup(name: string, options: { fillfactor?: number; deploy?: Record<string, unknown> } = {}): Promise<BenchDatabase> {
  const db = await freshDatabase(server, name);
  await createFeatureTable(db, 't');
  if (options.fillfactor) await db.query(`ALTER TABLE t SET (fillfactor = ${options.fillfactor})`);
  await deploy(db, 't', 'logreg', 't', options.deploy);
  return db;
}

const postmaster = await findPostmaster(server.adminUrl);
/** Postgres CPU (the server's whole process tree) so far, in seconds; NaN when the server is not local. */
const postgresCpu = async () => (postmaster.ok ? ((await treeCpuSeconds(postmaster.pid)) ?? Number.NaN) : Number.NaN);

async function drain(db: BenchDatabase, n: number, settings: Partial<typeof WORKER_DEFAULTS> = {}) {
  await db.query(insertSelectSql('t', n));
  await db.query('CHECKPOINT');
  const worker = new Worker(db.url, { ...WORKER_DEFAULTS, ...settings }, log);
  const p = { claim: 0, score: 0, write: 0, batches: 0, claimed: 0 };
  let written = 0;
  worker.on('batch', (b) => {
    written += b.written;
    p.batches++;
    p.claimed += b.claimed;
    p.claim += b.phases!.claimMs;
    p.score += b.phases!.scoreMs;
    p.write += b.phases!.writeMs;
  });
  const t = performance.now();
  const cpuBefore = await postgresCpu();
  await worker.start();
  await waitUntil(async () => written >= n, 'drain', 600_000, 5);
  const secs = (performance.now() - t) / 1000;
  const postgresUsPerRow = +((((await postgresCpu()) - cpuBefore) * 1e6) / n).toFixed(1);
  await worker.stop();
  const stats = await db.query<{ n_tup_upd: string; n_tup_hot_upd: string }>("SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 't'");
  return {
    rowsPerSec: Math.round(n / secs),
    postgresUsPerRow,
    perBatchMs: { claim: +(p.claim / p.batches).toFixed(1), score: +(p.score / p.batches).toFixed(1), write: +(p.write / p.batches).toFixed(1) },
    avgBatch: Math.round(p.claimed / p.batches),
    hotUpdates: `${stats[0]?.n_tup_hot_upd}/${stats[0]?.n_tup_upd}`,
  };
}

try {
  if (want('explain')) {
    say('== EXPLAIN (ANALYZE, BUFFERS) of one 1000-row claim and write-back (logreg, 100k queued) ==');
    const db = await setup('prof_explain');
    await db.query(insertSelectSql('t', 100_000));
    await db.query('VACUUM ANALYZE t');
    const [d] = await listActiveDeployments(db.pool);
    const sql = deploymentStatements(d!);
    const model = await loadModel('logreg', await modelBytes('logreg'), { threads: 1 });
    const client = await db.pool.connect();
    try {
      await client.query("BEGIN; SET LOCAL pgscore.writeback = 'on'");
      // The claim's parameters changed over time ($1 batch size; newer: $2 queue rows to lock,
      // $3 the deployment row's version).
      const claimValues = sql.claim.text.includes('$3') ? [1000, 1000, d!.rowVersion] : sql.claim.text.includes('$2') ? [1000, 1000] : [1000];
      const explainClaim = await client.query({ text: `EXPLAIN (ANALYZE, BUFFERS) ${sql.claim.text}`, values: claimValues });
      say(explainClaim.rows.map((r) => r['QUERY PLAN']).join('\n'));
      await client.query('ROLLBACK');
      // Client-side time of the same claim: server execution + transfer + pg's parsing of 33 columns x 1000 rows.
      for (let i = 0; i < 3; i++) {
        await client.query("BEGIN; SET LOCAL pgscore.writeback = 'on'");
        const t = performance.now();
        const { rows: raw } = await client.query<unknown[]>({ ...sql.claim, values: claimValues });
        const { rows } = decodeClaim(raw, 1, sql.claimLayout);
        const claimMs = performance.now() - t;
        const scored = await scoreRows(model, d!.plan, rows.map((row) => row.values));
        await client.query('SAVEPOINT before_write');
        // writePredictions builds the write-back's parameters; capture them to EXPLAIN the same statement.
        let values: unknown[] = [];
        const spy = new Proxy(client, {
          get(target, prop) {
            if (prop !== 'query') return Reflect.get(target, prop);
            return (config: { values?: unknown[] }) => {
              if (config.values) values = config.values;
              return target.query(config as never);
            };
          },
        });
        const t2 = performance.now();
        await writePredictions(spy, { id: d!.id, sql, keyCount: 1, plan: d!.plan }, rows, scored, 0, { ref: model.ref, scoreUs: 0 });
        const writeMs = performance.now() - t2;
        await client.query('ROLLBACK TO SAVEPOINT before_write');
        const explainWrite = await client.query({ text: `EXPLAIN (ANALYZE, BUFFERS) ${sql.writeBack[process.env.FORM === 'careful' ? 'careful' : 'fast'].text}`, values });
        if (i === 2) say(explainWrite.rows.map((r) => r['QUERY PLAN']).join('\n'));
        const t3 = performance.now();
        await client.query('ROLLBACK');
        say(`client-side: claim ${claimMs.toFixed(1)} ms, write-back ${writeMs.toFixed(1)} ms (rolled back in ${(performance.now() - t3).toFixed(1)} ms)`);
      }
      // The same 1000 rows' inputs read as 30 columns (text protocol, parsed by pg) vs one float4[] vs 30 columns unparsed.
      const ids = '(SELECT id FROM t ORDER BY id LIMIT 1000)';
      const variants: [string, string, boolean][] = [
        ['30 real columns, pg parses each', `SELECT id::text, xmin, ${FEATURES.join(', ')} FROM t WHERE id IN ${ids}`, true],
        ['one float4[] column', `SELECT id::text, xmin, ARRAY[${FEATURES.join(', ')}]::float4[] FROM t WHERE id IN ${ids}`, true],
        ['one text column (string_agg), split in JS', `SELECT id::text, xmin, concat_ws(',', ${FEATURES.join(', ')}) FROM t WHERE id IN ${ids}`, true],
      ];
      for (const [label, text] of variants) {
        const times: number[] = [];
        for (let i = 0; i < 15; i++) {
          const t = performance.now();
          const { rows } = await client.query<unknown[]>({ text, rowMode: 'array' });
          if (label.startsWith('one text')) for (const r of rows) (r[2] as string).split(',').map(Number);
          times.push(performance.now() - t);
        }
        times.sort((a, b) => a - b);
        say(`read 1000 rows, ${label}: median ${times[7]!.toFixed(1)} ms`);
      }
    } finally {
      client.release();
      await model.session.release();
      await db.close();
    }
  }

  if (want('drain')) {
    say('\n== backlog drain variants (logreg, 100k rows, in-process notify worker) ==');
    const variants: [string, { fillfactor?: number; deploy?: Record<string, unknown> }, Partial<typeof WORKER_DEFAULTS>, string?][] = [
      ['baseline (defaults)', {}, {}],
      ['prediction log off (log_sample 0)', { deploy: { log_sample: 0 } }, {}],
      ['provenance off', { deploy: { provenance: false } }, {}],
      ['log and provenance off', { deploy: { log_sample: 0, provenance: false } }, {}],
      ['log and provenance off, update trigger disabled', { deploy: { log_sample: 0, provenance: false } }, {}, 'ALTER TABLE t DISABLE TRIGGER pgscore_t_update'],
      ['log and provenance off, fillfactor 70', { fillfactor: 70, deploy: { log_sample: 0, provenance: false } }, {}],
      ['table fillfactor 50', { fillfactor: 50 }, {}],
      ['update trigger disabled (no transition-table capture on write-back)', {}, {}, 'ALTER TABLE t DISABLE TRIGGER pgscore_t_update'],
      ['concurrency 1', {}, { concurrency: 1 }],
      ['concurrency 4', {}, { concurrency: 4 }],
      ['batch 5000', {}, { batchSize: 5000 }],
      ['fillfactor 50 + update trigger disabled + batch 5000', { fillfactor: 50 }, { batchSize: 5000 }, 'ALTER TABLE t DISABLE TRIGGER pgscore_t_update'],
    ];
    // PROFILE_VARIANTS=baseline,log runs only the variants whose label contains one of those words,
    // PROFILE_ROUNDS=3 each of them that many times, alternating.
    const only = process.env.PROFILE_VARIANTS?.split(',');
    const chosen = variants.filter(([label]) => !only || only.some((word) => label.includes(word)));
    const rounds = Array.from({ length: Number(process.env.PROFILE_ROUNDS ?? 1) }, () => chosen).flat();
    for (const [label, tableOptions, settings, extra] of rounds) {
      const db = await setup('prof_drain', tableOptions);
      if (extra) await db.query(extra);
      say(`${label}: ${JSON.stringify(await drain(db, 100_000, settings))}`);
      await db.close();
    }
  }

  if (want('bulk')) {
    say('\n== bulk INSERT … SELECT of 100k rows: where the trigger time goes ==');
    const db = await setup('prof_bulk');
    await createFeatureTable(db, 'plain');
    const time = async (sql: string) => {
      const ms: number[] = [];
      for (let i = 0; i < 3; i++) {
        await db.query('TRUNCATE t, plain, ml._queue_1');
        await db.query('CHECKPOINT');
        const t = performance.now();
        await db.query(sql);
        ms.push(performance.now() - t);
      }
      return ms.sort((a, b) => a - b)[1]!;
    };
    const plain = await time(insertSelectSql('plain', 100_000));
    const deployed = await time(insertSelectSql('t', 100_000));
    say(`plain ${plain.toFixed(0)} ms, deployed ${deployed.toFixed(0)} ms, ratio ${(plain / deployed).toFixed(2)}`);
    const r = await db.query<{ 'QUERY PLAN': string }>(`EXPLAIN (ANALYZE, BUFFERS) ${insertSelectSql('t', 100_000)}`);
    say(r.map((x) => x['QUERY PLAN']).join('\n'));
    await db.query('ALTER TABLE ml._queue_1 SET UNLOGGED');
    say(`queue UNLOGGED: deployed ${(await time(insertSelectSql('t', 100_000))).toFixed(0)} ms`);
    await db.query('ALTER TABLE ml._queue_1 SET LOGGED');
    await db.query('DROP INDEX ml._queue_1_claim');
    say(`queue without its (priority, seq) index: deployed ${(await time(insertSelectSql('t', 100_000))).toFixed(0)} ms`);
    await db.close();
  }

  if (want('capture')) {
    say('\n== OLTP capture alone (no worker), 16 pgbench clients, 8 s: what each part costs ==');
    const db = await setup('prof_capture');
    await createFeatureTable(db, 'plain');
    const script = `/tmp/pgscore-prof-${process.pid}.sql`;
    const tps = async (table: string) => {
      await writeFile(script, `INSERT INTO ${table} (${FEATURES.join(', ')}) VALUES (${SINGLE_INSERT_VALUES});\n`);
      await db.query(`TRUNCATE ${table}`);
      await db.query('TRUNCATE ml._queue_1');
      await db.query('CHECKPOINT');
      const cpuBefore = await postgresCpu();
      const { stdout } = await run('pgbench', ['-n', '-M', 'prepared', '-c', '16', '-j', '2', '-T', '8', '-f', script, db.url]);
      const rows = Number(/number of transactions actually processed: (\d+)/.exec(stdout)![1]);
      return { tps: Number(/tps = ([\d.]+)/.exec(stdout)![1]), postgresUsPerInsert: +((((await postgresCpu()) - cpuBefore) * 1e6) / rows).toFixed(1) };
    };
    const plain = await tps('plain');
    say(`no deployment: ${JSON.stringify(plain)}`);
    const report = async (label: string) => {
      const r = await tps('t');
      say(`${label}: ${JSON.stringify(r)} (${(r.tps / plain.tps).toFixed(2)} of plain)`);
    };
    await report('capture (statement trigger, queue insert, wake check)');
    await db.query('DROP INDEX ml._queue_1_claim');
    await report('capture, queue without its (priority, seq) index');
    await db.query(`CREATE OR REPLACE FUNCTION ml._enqueue_1() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$`);
    await report('trigger that does nothing (the trigger machinery and its transition table)');
    await db.query('DROP TRIGGER pgscore_t_insert ON t');
    await report('no insert trigger (the update trigger stays)');
    say(`no deployment again: ${JSON.stringify(await tps('plain'))}`);
    await rm(script, { force: true });
    await db.close();
  }

  if (want('oltp')) {
    say('\n== OLTP, 16 pgbench clients, 8 s: what costs the throughput ==');
    const db = await setup('prof_oltp');
    await createFeatureTable(db, 'plain');
    const script = `/tmp/pgscore-prof-${process.pid}.sql`;
    const tps = async (table: string) => {
      await writeFile(script, `INSERT INTO ${table} (${FEATURES.join(', ')}) VALUES (${SINGLE_INSERT_VALUES});\n`);
      await db.query(`TRUNCATE ${table}`);
      const { stdout } = await run('pgbench', ['-n', '-M', 'prepared', '-c', '16', '-j', '2', '-T', '8', '-f', script, db.url]);
      return Number(/tps = ([\d.]+)/.exec(stdout)![1]);
    };
    const plain = await tps('plain');
    say(`no deployment: ${plain.toFixed(0)} tx/s`);
    say(`deployment, no worker (trigger + queue insert only): ${(await tps('t')).toFixed(0)} tx/s`);
    await db.query('TRUNCATE ml._queue_1');
    for (const [label, settings] of [['worker defaults', {}], ['worker maxWaitMs 20', { maxWaitMs: 20 }], ['worker concurrency 1', { concurrency: 1 }]] as const) {
      const worker = new Worker(db.url, { ...WORKER_DEFAULTS, ...settings }, log);
      let batches = 0;
      let claimed = 0;
      worker.on('batch', (b) => {
        batches++;
        claimed += b.claimed;
      });
      await worker.start();
      const v = await tps('t');
      say(`deployment + ${label}: ${v.toFixed(0)} tx/s (${(v / plain).toFixed(2)} of plain), ${batches} batches, ${(claimed / Math.max(1, batches)).toFixed(1)} rows per batch`);
      await waitUntil(async () => (await queueSize(db, 't')) === 0, 'drain', 60_000);
      await worker.stop();
    }
    say(`plain again: ${(await tps('plain')).toFixed(0)} tx/s`);
    await rm(script, { force: true });
    await db.close();
  }

  if (want('latency')) {
    say('\n== latency at 1k rows/s, in-process worker: batches and idle behaviour ==');
    for (const [label, settings] of [['defaults', {}], ['pollIntervalMs 10', { pollIntervalMs: 10 }]] as const) {
      const db = await setup('prof_latency');
      const worker = new Worker(db.url, { ...WORKER_DEFAULTS, ...settings }, log);
      const sizes: number[] = [];
      worker.on('batch', (b) => sizes.push(b.claimed));
      await worker.start();
      await sleep(300);
      const r = await measureLatency(db.url, 't', { rate: 1000, seconds: 8, windows: 1, warmupSeconds: 1, pollEveryMs: 1 });
      await worker.stop();
      const status = sizes.length;
      say(`${label}: p50 ${r.overall.p50.toFixed(1)} ms, p95 ${r.overall.p95.toFixed(1)}, p99 ${r.overall.p99.toFixed(1)}; ${status} batches, ${(sizes.reduce((a, b) => a + b, 0) / status).toFixed(1)} rows per batch`);
      await db.close();
    }
  }
} finally {
  await server.stop();
}
