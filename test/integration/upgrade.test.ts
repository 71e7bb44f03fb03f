import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { migrate, type MigrateOptions, type MigrateResult } from '../../src/db/migrate.js';
import { connectionAs } from '../../src/db/roles.js';
import { pushModel } from '../../src/models/registry.js';
import { Worker } from '../../src/worker/worker.js';
import { catalogDump, diffLines } from '../helpers/catalog.js';
import { modelBytes, quietLog, waitFor, WORKER_DEFAULTS } from '../helpers/db.js';
import { WORKER_ROLE, withDatabase } from '../helpers/global-postgres.js';

/**
 * Upgrading from the previous release (e565d96, the sql/ folder users have installed) must
 * keep every queued key and dead letter, leave every deployment scoring, and end with exactly
 * the catalog a fresh install of this version has (pgai's upgrade test).
 */
const OLD_RELEASE = new URL('../fixtures/sql-e565d96/', import.meta.url);
/** The schemas pgscore touches: its own, and the users' (triggers, prediction columns, grants). */
const SCHEMAS = ['ml', 'public', 'Lab Data'];

interface Database {
  readonly url: string;
  readonly pool: pg.Pool;
  sql<T extends pg.QueryResultRow = Record<string, unknown>>(text: string, values?: unknown[]): Promise<T[]>;
  migrate(options?: MigrateOptions): Promise<MigrateResult>;
  drop(): Promise<void>;
}

/** An empty database on the test server: no template, no ml schema. */
async function createEmptyDatabase(label: string): Promise<Database> {
  const adminUrl = inject('adminUrl');
  const name = `pgscore_upgrade_${label}_${randomBytes(4).toString('hex')}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  const url = withDatabase(adminUrl, name);
  const pool = new pg.Pool({ connectionString: url, max: 4 });
  pool.on('error', () => undefined);
  return {
    url,
    pool,
    async sql<T extends pg.QueryResultRow>(text: string, values?: unknown[]) {
      return (await pool.query<T>(text, values)).rows;
    },
    async migrate(options: MigrateOptions = {}) {
      const client = await pool.connect();
      try {
        return await migrate(client, options);
      } finally {
        client.release();
      }
    },
    async drop() {
      await pool.end();
      const dropper = new pg.Client({ connectionString: adminUrl });
      await dropper.connect();
      await dropper.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await dropper.end();
    },
  };
}

async function dumpAll(db: Database): Promise<string> {
  const dumps = await Promise.all(SCHEMAS.map((schema) => catalogDump(db.pool, schema)));
  return dumps.map((dump, i) => `=== schema ${SCHEMAS[i]}\n${dump}`).join('\n\n');
}

// Inputs of one flower of each species (the iris data set's first of each).
const SETOSA = [5.1, 3.5, 1.4, 0.2];
const VERSICOLOR = [7.0, 3.2, 4.7, 1.4];
const VIRGINICA = [6.3, 3.3, 6.0, 2.5];
/** SQL VALUES rows (sl, sw, pl, pw, truth) cycling through the three species by n. */
const FLOWER = (n: string, scale = 1) => `
  (ARRAY[${SETOSA[0]! * scale}, ${VERSICOLOR[0]! * scale}, ${VIRGINICA[0]! * scale}])[${n} % 3 + 1],
  (ARRAY[${SETOSA[1]! * scale}, ${VERSICOLOR[1]! * scale}, ${VIRGINICA[1]! * scale}])[${n} % 3 + 1],
  (ARRAY[${SETOSA[2]! * scale}, ${VERSICOLOR[2]! * scale}, ${VIRGINICA[2]! * scale}])[${n} % 3 + 1],
  (ARRAY[${SETOSA[3]! * scale}, ${VERSICOLOR[3]! * scale}, ${VIRGINICA[3]! * scale}])[${n} % 3 + 1],
  (ARRAY['setosa', 'versicolor', 'virginica'])[${n} % 3 + 1]`;

/** The tables of a user, with a few rows each before anything is deployed. */
const TABLES = `
  CREATE TABLE flowers (id bigint PRIMARY KEY, sl real, sw real, pl real, pw real, truth text, note text);
  INSERT INTO flowers SELECT n, ${FLOWER('n')} FROM generate_series(1, 6) n;

  CREATE TABLE readings (
    seq int, site text, a real, b numeric, c double precision, d smallint, e bigint, ok boolean, tag varchar(10),
    PRIMARY KEY (seq, site));
  INSERT INTO readings VALUES (1, 'north', 1.5, 2.25, 0.125, 10, 1000, true, 'first');

  CREATE SCHEMA "Lab Data";
  CREATE TABLE "Lab Data"."Iris Samples" (
    "Sample ID" int PRIMARY KEY, "Sepal Length" real, "Sepal Width" real, "Petal Length" real, "Petal Width" real, "Truth" text);
  INSERT INTO "Lab Data"."Iris Samples" SELECT n, ${FLOWER('n')} FROM generate_series(1, 3) n;

  CREATE TABLE measurements (id bigint PRIMARY KEY, sl_mm int, sw_mm int, pl_mm int, pw_mm int, truth text);
  INSERT INTO measurements SELECT n, ${FLOWER('n', 10)} FROM generate_series(1, 3) n;

  CREATE TABLE staged (id bigint PRIMARY KEY, sl real, sw real, pl real, pw real, truth text);`;

/** The deployments, in this order in both databases, so that their ids (and generated names) match. */
const DEPLOYMENTS = [
  `SELECT ml.deploy('flowers', 'flowers', 'iris',
     inputs => '{"X": ["sl", "sw", "pl", "pw"]}', outputs => '{"species": "label", "p_setosa": "probabilities[0]"}')`,
  `SELECT ml.deploy('readings', 'readings', 'typed',
     inputs => '{"f32": ["a", "b"], "f64": "c", "i32": "d", "i64": "e", "flag": "ok", "tag": "tag"}')`,
  `SELECT ml.deploy('lab-samples', '"Lab Data"."Iris Samples"', 'iris',
     inputs => '{"X": ["Sepal Length", "Sepal Width", "Petal Length", "Petal Width"]}',
     outputs => '{"Predicted Species": "label"}')`,
  `SELECT ml.deploy('measurements', 'measurements', 'iris',
     inputs => '{"X": ["sl_mm / 10.0", "sw_mm / 10.0", "pl_mm / 10.0", "pw_mm / 10.0"]}', outputs => '{"species": "label"}')`,
  `SELECT ml.deploy('staged', 'staged', 'iris@staging', inputs => '{"X": ["sl", "sw", "pl", "pw"]}', outputs => '{"species": "label"}')`,
];
const NAMES = ['flowers', 'readings', 'lab-samples', 'measurements', 'staged'];

/** Registers the models as `pgscore model push` does (the old schema has everything it calls). */
async function registerModels(db: Database): Promise<void> {
  await pushModel(db.pool, 'iris', await modelBytes('iris.onnx'));
  await pushModel(db.pool, 'typed', await modelBytes('typed.onnx'));
  // iris@2 (the same file) behind the staging alias.
  await pushModel(db.pool, 'iris', await modelBytes('iris.onnx'));
  await db.sql(`SELECT ml.promote('iris', 2, 'staging')`);
}

async function installUserSetup(db: Database): Promise<void> {
  await registerModels(db);
  await db.sql(TABLES);
  for (const deploy of DEPLOYMENTS) expect((await db.sql(deploy))[0]).toEqual({ deploy: 'active' });
}

/**
 * Writes an application made with the old release deployed, while no worker ran: bulk and single
 * inserts (queued by the old triggers), updates of inputs (queued again) and of other columns
 * (not queued), a row with a NULL input, and dead letters the old worker left behind.
 */
async function oldTraffic(db: Database): Promise<void> {
  await db.sql(`INSERT INTO flowers SELECT n, ${FLOWER('n')} FROM generate_series(1001, 1250) n`);
  for (const id of [7, 8, 9]) await db.sql(`INSERT INTO flowers SELECT n, ${FLOWER('n')} FROM (VALUES ($1::int)) v(n)`, [id]);
  await db.sql(`UPDATE flowers SET sl = ${VIRGINICA[0]}, sw = ${VIRGINICA[1]}, pl = ${VIRGINICA[2]}, pw = ${VIRGINICA[3]},
                  truth = 'virginica' WHERE id BETWEEN 1001 AND 1010`);
  await db.sql(`UPDATE flowers SET note = 'not an input' WHERE id BETWEEN 1100 AND 1200`);
  await db.sql(`INSERT INTO flowers (id, sl, sw, pl, pw) VALUES (2000, NULL, 1, 1, 1)`);

  await db.sql(`INSERT INTO readings
    SELECT n, s, n * 0.5, 0.25, 0.125, n, 1000 + n, n % 2 = 0, 'r' || n FROM generate_series(2, 5) n, unnest(ARRAY['north', 'south']) s`);
  await db.sql(`UPDATE readings SET e = 5000 WHERE seq = 2 AND site = 'south'`);

  await db.sql(`INSERT INTO "Lab Data"."Iris Samples" SELECT n, ${FLOWER('n')} FROM generate_series(4, 8) n`);
  await db.sql(`INSERT INTO measurements SELECT n, ${FLOWER('n', 10)} FROM generate_series(4, 130) n`);
  await db.sql(`INSERT INTO staged SELECT n, ${FLOWER('n')} FROM generate_series(1, 4) n`);

  // Rows the old worker claimed and dead-lettered: not queued (its own writes skipped the
  // triggers the same way), kept in ml._dead_letters as it wrote them.
  await db.sql(`BEGIN;
    SET LOCAL pgscore.writeback = 'on';
    INSERT INTO flowers VALUES (3000, ${SETOSA.join(', ')}, 'setosa');
    INSERT INTO readings VALUES (99, 'east', 1, 1, 1, 1, 1, true, 'late');
    INSERT INTO measurements VALUES (999, NULL, 35, 14, 2, 'setosa');
    COMMIT`);
  await db.sql(`INSERT INTO ml._dead_letters (deployment_id, row_key, reason)
    SELECT d.id, l.row_key, l.reason
      FROM (VALUES ('flowers', '{"id": 3000}'::jsonb, 'onnxruntime failed: out of memory'),
                   ('readings', '{"seq": 99, "site": "east"}', 'model typed@1 cannot be loaded: file is busy'),
                   ('measurements', '{"id": 999}', 'expression (sl_mm / 10.0) is NULL')) l(deployment, row_key, reason)
      JOIN ml._deployments d ON d.name = l.deployment`);
}

interface QueueRow {
  pgscore_seq: string;
  pgscore_priority: number;
  pgscore_queued_at: string;
  pgscore_n: number;
  keys: string[][];
}

/** Every queue row of every deployment, with its keys read from the given key columns. */
async function queues(db: Database, keyColumns: (plan: { keys: { column: string }[] }) => string[]): Promise<Record<string, QueueRow[]>> {
  const deployments = await db.sql<{ id: number; name: string; plan: { keys: { column: string }[] } }>(
    'SELECT id, name, plan FROM ml._deployments ORDER BY id');
  const result: Record<string, QueueRow[]> = {};
  for (const d of deployments) {
    const keys = keyColumns(d.plan).map((c) => `${pg.escapeIdentifier(c)}::text[]`).join(', ');
    result[d.name] = await db.sql<QueueRow>(`
      SELECT pgscore_seq, pgscore_priority, pgscore_queued_at::text, pgscore_n, ARRAY[${keys}] AS keys
        FROM ml.${pg.escapeIdentifier(`_queue_${d.id}`)} ORDER BY pgscore_seq`);
  }
  return result;
}

async function queueColumns(db: Database, queue: string): Promise<string[]> {
  const rows = await db.sql<{ column_name: string }>(`SELECT column_name FROM information_schema.columns
    WHERE table_schema = 'ml' AND table_name = $1 ORDER BY ordinal_position`, [queue]);
  return rows.map((row) => row.column_name);
}

const DEAD_LETTERS = `SELECT d.name, e.row_key, e.reason, e.attempts, e.first_seen::text
  FROM ml._dead_letters e JOIN ml._deployments d ON d.id = e.deployment_id ORDER BY d.name, e.row_key::text`;

describe('upgrading from the previous release (e565d96)', () => {
  let old: Database;
  let fresh: Database;
  let worker: Worker | undefined;
  let queuedBefore: Record<string, QueueRow[]>;
  let deadBefore: Record<string, unknown>[];
  let pendingBefore: { deployment: string; pending: string }[];
  let upgrade: MigrateResult;
  let upgradedDump: string;
  let oldQueueColumns: string[];

  beforeAll(async () => {
    [old, fresh] = await Promise.all([createEmptyDatabase('old'), createEmptyDatabase('fresh')]);
    await old.migrate({ sqlDir: OLD_RELEASE });
    await installUserSetup(old);
    await oldTraffic(old);
    // The old layout: key columns named after the table's.
    queuedBefore = await queues(old, (plan) => plan.keys.map((k) => k.column));
    oldQueueColumns = await queueColumns(old, '_queue_2');
    deadBefore = await old.sql(DEAD_LETTERS);
    pendingBefore = await old.sql('SELECT deployment, pending::text FROM ml.status ORDER BY deployment');
    upgrade = await old.migrate();
    upgradedDump = await dumpAll(old);
  });
  afterAll(async () => {
    await worker?.stop();
    await Promise.all([old?.drop(), fresh?.drop()]);
  });

  it('starts from the old release: old queue layout, rows queued, dead letters', async () => {
    expect(Object.keys(queuedBefore)).toEqual(NAMES);
    expect(oldQueueColumns).toEqual(['pgscore_seq', 'pgscore_priority', 'pgscore_queued_at', 'pgscore_n', 'seq', 'site']);
    // Backfill on deploy (priority 1), then live traffic (0): 100-key chunks for a bulk statement
    // (in any order), one row per small statement; the update queued only the 6 rows whose
    // inputs changed (4 of the 10 were virginica already).
    const shape = (rows: QueueRow[]) => rows.map((row) => `${row.pgscore_priority}:${row.pgscore_n}`);
    const flowers = shape(queuedBefore.flowers!);
    expect([flowers[0], ...flowers.slice(1, 4).sort(), ...flowers.slice(4)]).toEqual(
      ['1:6', '0:100', '0:100', '0:50', '0:1', '0:1', '0:1', '0:6', '0:1']);
    expect(queuedBefore.readings!.at(-1)!.keys).toEqual([['2'], ['south']]);
    expect(queuedBefore.measurements!.map((row) => row.pgscore_n).sort((a, b) => a - b)).toEqual([3, 27, 100]);
    expect(pendingBefore).toEqual([
      { deployment: 'flowers', pending: '266' },
      { deployment: 'lab-samples', pending: '8' },
      { deployment: 'measurements', pending: '130' },
      { deployment: 'readings', pending: '10' },
      { deployment: 'staged', pending: '4' },
    ]);
    expect(deadBefore).toHaveLength(3);
  });

  it('migrate upgrades it and reports every deployment active', () => {
    expect(upgrade.applied).toEqual(['0003_safety.sql', '0004_batch_models.sql', '0005_lifecycle.sql', '0006_monitoring.sql', '0007_prediction_batches.sql', '0009_kafka_offsets.sql', '0010_models.sql', '0011_locks.sql', '0012_capture.sql']);
    expect(upgrade.schemaVersion).toBe(12);
    expect(upgrade.deployments).toEqual(NAMES.map((deployment) => ({ deployment, status: 'active', reason: null })));
  });

  it('keeps every queued key, in the new layout (pgscore_k1..), and every dead letter', async () => {
    const after = await queues(old, (plan) => plan.keys.map((_, i) => `pgscore_k${i + 1}`));
    expect(after).toEqual(queuedBefore);
    expect(await old.sql('SELECT deployment, pending::text FROM ml.status ORDER BY deployment')).toEqual(pendingBefore);
    expect(await old.sql(DEAD_LETTERS)).toEqual(deadBefore);
    expect(await queueColumns(old, '_queue_2')).toEqual([
      'pgscore_seq', 'pgscore_priority', 'pgscore_queued_at', 'pgscore_n', 'pgscore_k1', 'pgscore_k2', 'pgscore_attempts', 'pgscore_not_before', 'pgscore_lo', 'pgscore_hi']);
  });

  it('a worker of this release scores every queued row from its own inputs, and dead-letters the NULL one', async () => {
    worker = new Worker(connectionAs(old.url, WORKER_ROLE, 'pgscore'), WORKER_DEFAULTS, quietLog);
    await worker.start();
    await waitFor(async () => {
      const [row] = await old.sql<{ pending: string }>('SELECT sum(pending)::text AS pending FROM ml.status');
      const [dead] = await old.sql<{ n: string }>(`SELECT count(*)::text AS n FROM ml._dead_letters`);
      return row!.pending === '0' && dead!.n === '4';
    }, 'the queues drained');

    const wrong = await old.sql(`
      SELECT 'flowers' AS t, id::text AS key, species AS got, truth AS want FROM flowers
       WHERE species IS DISTINCT FROM truth AND id NOT IN (2000, 3000)
      UNION ALL
      SELECT 'lab-samples', "Sample ID"::text, "Predicted Species", "Truth" FROM "Lab Data"."Iris Samples"
       WHERE "Predicted Species" IS DISTINCT FROM "Truth"
      UNION ALL
      SELECT 'measurements', id::text, species, truth FROM measurements WHERE species IS DISTINCT FROM truth AND id <> 999
      UNION ALL
      SELECT 'staged', id::text, species, truth FROM staged WHERE species IS DISTINCT FROM truth
      UNION ALL
      SELECT 'readings', seq || '/' || site, concat_ws(' ', total, echo, doubled), concat_ws(' ', a + b + c + d + e + ok::int, tag, 2 * e)
        FROM readings
       WHERE (seq, site) <> (99, 'east')
         AND (total IS NULL OR abs(total - (a + b + c + d + e + ok::int)) > 1e-3 OR echo IS DISTINCT FROM tag OR doubled IS DISTINCT FROM 2 * e)`);
    expect(wrong).toEqual([]);
    expect(await old.sql(`SELECT count(*)::int AS n FROM flowers WHERE species IS NOT NULL`)).toEqual([{ n: 259 }]);
    expect(await old.sql(`SELECT count(*)::int AS n FROM readings WHERE total IS NOT NULL`)).toEqual([{ n: 9 }]);
    expect(await old.sql(`SELECT deployment, row_key, reason, attempts FROM ml.errors WHERE row_key = '{"id": 2000}'`)).toEqual([
      { deployment: 'flowers', row_key: { id: 2000 }, reason: 'column "sl" is NULL; model input X has no NULL', attempts: 1 },
    ]);
  });

  it('ml.retry queues the old dead letters again, and the worker handles them', async () => {
    const retried = await old.sql<{ deployment: string; n: string }>(
      `SELECT d.deployment, ml.retry(d.deployment)::text AS n FROM ml.deployments d ORDER BY d.deployment`);
    expect(retried).toEqual([
      { deployment: 'flowers', n: '2' },
      { deployment: 'lab-samples', n: '0' },
      { deployment: 'measurements', n: '1' },
      { deployment: 'readings', n: '1' },
      { deployment: 'staged', n: '0' },
    ]);
    const errors = () => old.sql(`SELECT deployment, row_key, reason, attempts FROM ml.errors ORDER BY deployment, row_key::text`);
    const handled = await waitFor(async () => {
      const rows = await errors();
      return rows.length === 2 && rows.every((row) => row.attempts === 2) && rows;
    }, 'the retried rows handled');
    expect(handled).toEqual([
      { deployment: 'flowers', row_key: { id: 2000 }, reason: 'column "sl" is NULL; model input X has no NULL', attempts: 2 },
      { deployment: 'measurements', row_key: { id: 999 }, reason: 'expression (sl_mm / 10.0) is NULL; model input X has no NULL', attempts: 2 },
    ]);
    expect(await old.sql(`SELECT species FROM flowers WHERE id = 3000`)).toEqual([{ species: 'setosa' }]);
    expect(await old.sql(`SELECT total, echo FROM readings WHERE seq = 99`)).toEqual([{ total: 6, echo: 'late' }]);
  });

  it('an upgraded deployment has the lifecycle: runs, the prediction log, ml.compare', async () => {
    const [{ run }] = (await old.sql<{ run: string }>(`SELECT ml.run_now('flowers')::text AS run`)) as [{ run: string }];
    const [done] = await waitFor(async () => {
      const rows = await old.sql<{ state: string; rows: string; scored: string }>(`SELECT state, rows, scored FROM ml.runs WHERE run = $1`, [run]);
      return rows[0]?.state === 'finished' && rows;
    }, 'the run finished');
    expect(done).toEqual({ state: 'finished', rows: '261', scored: '261' });
    const [compare] = await old.sql<{ model: string; role: string; rows: string }>(
      `SELECT model, role, rows FROM ml.compare WHERE deployment = 'flowers'`);
    expect(compare).toMatchObject({ role: 'live' });
    expect(Number(compare!.rows)).toBeGreaterThanOrEqual(259);
  });

  // What a user does next. Old functions the current files do not drop stay callable, and
  // an old overload makes calls that fit both ambiguous.
  it('deploys a new table on the upgraded database', async () => {
    await old.sql(`CREATE TABLE late_flowers (id bigint PRIMARY KEY, sl real, sw real, pl real, pw real)`);
    expect(await old.sql(`SELECT ml.deploy('late', 'late_flowers', 'iris',
      inputs => '{"X": ["sl", "sw", "pl", "pw"]}', outputs => '{"species": "label"}')`)).toEqual([{ deploy: 'active' }]);
    await old.sql(`INSERT INTO late_flowers VALUES (1, ${VERSICOLOR.join(', ')})`);
    const [row] = await waitFor(async () => {
      const rows = await old.sql<{ species: string | null }>(`SELECT species FROM late_flowers WHERE species IS NOT NULL`);
      return rows.length > 0 && rows;
    }, 'the new deployment scored');
    expect(row).toEqual({ species: 'versicolor' });
  });

  it('promotes a model version on the upgraded database, and its followers score with it', async () => {
    await old.sql(`SELECT ml.promote('iris', 2)`);
    expect(await old.sql(`SELECT deployment, model_version FROM ml.deployments WHERE deployment IN ('flowers', 'lab-samples', 'measurements')
      ORDER BY deployment`)).toEqual([
      { deployment: 'flowers', model_version: 2 },
      { deployment: 'lab-samples', model_version: 2 },
      { deployment: 'measurements', model_version: 2 },
    ]);
    await old.sql(`INSERT INTO flowers VALUES (4000, ${VIRGINICA.join(', ')}, 'virginica')`);
    const [row] = await waitFor(async () => {
      const rows = await old.sql<{ species: string | null }>(`SELECT species FROM flowers WHERE id = 4000 AND species IS NOT NULL`);
      return rows.length > 0 && rows;
    }, 'the promoted version scored');
    expect(row).toEqual({ species: 'virginica' });
  });

  it('equals a fresh install with the same models and deployments', async () => {
    await fresh.migrate();
    await installUserSetup(fresh);
    const freshDump = await dumpAll(fresh);
    expect(upgradedDump === freshDump, `upgraded (-) and fresh (+) differ:\n${diffLines(upgradedDump, freshDump)}`).toBe(true);
  });

  it('migrate again changes nothing', async () => {
    const before = await dumpAll(fresh);
    const again = await fresh.migrate();
    expect(again.applied).toEqual([]);
    expect(again.deployments).toEqual(NAMES.map((deployment) => ({ deployment, status: 'active', reason: null })));
    const after = await dumpAll(fresh);
    expect(before === after, `first (-) and second (+) migrate differ:\n${diffLines(before, after)}`).toBe(true);
  });

  it('migrate refuses a schema newer than it knows, and leaves it as it is', async () => {
    await fresh.sql(`INSERT INTO ml._migrations (version, name) VALUES (999, '0999_future.sql')`);
    const before = await dumpAll(fresh);
    await expect(fresh.migrate()).rejects.toMatchObject({
      message: 'the ml schema is at version 999, newer than this pgscore knows (12)',
      hint: 'Upgrade pgscore; an older version must not rewrite the functions of a newer schema.',
    });
    expect(await dumpAll(fresh)).toBe(before);
  });
});

describe('upgrading from the monitoring release (663ec27), whose prediction log holds a row per prediction', () => {
  const MONITORING_RELEASE = new URL('../fixtures/sql-663ec27/', import.meta.url);
  const LOG = `SELECT deployment_id, row_key, model, role, outputs, error, score_us, scored_at FROM ml._predictions
                ORDER BY scored_at, row_key->>'id', role`;
  let db: Database;
  let worker: Worker | undefined;
  let logBefore: Record<string, unknown>[];

  beforeAll(async () => {
    db = await createEmptyDatabase('log');
    await db.migrate({ sqlDir: MONITORING_RELEASE });
    await registerModels(db);
    await db.sql(`CREATE TABLE flowers (id bigint PRIMARY KEY, sl real, sw real, pl real, pw real, truth text)`);
    await db.sql(`SELECT ml.deploy('flowers', 'flowers', 'iris', inputs => '{"X": ["sl", "sw", "pl", "pw"]}',
                    outputs => '{"species": "label"}', options => '{"backfill": false}')`);
    // What that release's workers logged today and yesterday (scored, and a dead letter in ten),
    // and rows queued since, which no worker scored yet.
    await db.sql(`
      INSERT INTO ml._predictions (deployment_id, row_key, model, role, outputs, error, score_us, scored_at)
      SELECT d.id, jsonb_build_object('id', n), 'iris@1', CASE WHEN n % 7 = 0 THEN 'shadow' ELSE 'live' END,
             CASE WHEN n % 10 <> 0 THEN jsonb_build_object('species', 'setosa') END,
             CASE WHEN n % 10 = 0 THEN 'column "sl" is NULL; model input X has no NULL' END,
             1.5, date_trunc('second', now()) - (n % 2) * interval '1 day' - (n % 5) * interval '1 minute'
        FROM ml._deployments d, generate_series(1, 400) n WHERE d.name = 'flowers'`);
    await db.sql(`INSERT INTO flowers SELECT n, ${FLOWER('n')} FROM generate_series(1, 30) n`);
    logBefore = await db.sql(LOG);
    await db.migrate();
  });
  afterAll(async () => {
    await worker?.stop();
    await db?.drop();
  });

  it('keeps every logged prediction, shown one per row as before, stored a row per batch', async () => {
    expect(logBefore).toHaveLength(400);
    expect(await db.sql(LOG)).toEqual(logBefore);
    const [stored] = await db.sql<{ batches: string; predictions: string }>(
      `SELECT count(*)::text AS batches, sum(cardinality(row_keys))::text AS predictions FROM ml._prediction_batches`);
    // One batch per deployment, model, role and time: 2 days x 5 minutes x 2 roles.
    expect(stored).toEqual({ batches: '20', predictions: '400' });
  });

  it('a worker scores the rows queued before the upgrade and logs them beside the old entries', async () => {
    worker = new Worker(connectionAs(db.url, WORKER_ROLE, 'pgscore'), WORKER_DEFAULTS, quietLog);
    await worker.start();
    await waitFor(async () => (await db.sql(`SELECT 1 FROM flowers WHERE species IS NULL`)).length === 0, 'the queued rows scored');
    expect(await db.sql(`SELECT count(*)::int AS n FROM flowers WHERE species = truth`)).toEqual([{ n: 30 }]);
    const newestOld = logBefore.map((row) => (row.scored_at as Date).getTime()).reduce((a, b) => Math.max(a, b));
    const [logged] = await db.sql<{ n: number }>(`SELECT count(*)::int AS n FROM ml._predictions WHERE scored_at > $1`, [new Date(newestOld)]);
    expect(logged!.n).toBe(30);
    expect(await db.sql(`SELECT count(*)::int AS n FROM ml._predictions`)).toEqual([{ n: 430 }]);
    const [compare] = await db.sql<{ rows: string }>(`SELECT rows::text FROM ml.compare WHERE deployment = 'flowers' AND role = 'live'`);
    expect(Number(compare!.rows)).toBeGreaterThanOrEqual(30);
  });
});
