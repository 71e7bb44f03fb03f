import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { keyPosition } from '../../src/lifecycle/variants.js';
import type { Worker } from '../../src/worker/worker.js';
import { createTestDatabase, pending, push, startWorker, waitFor, type TestDatabase } from '../helpers/db.js';
import { createSumsTable, insertSums, registerSums, SUMS_INPUTS as INPUTS, SUMS_OUTPUTS as OUTPUTS, V1, V2 } from '../helpers/sums.js';

/** Splits, shadows and the prediction log, with two versions that predict differently. */
describe('model lifecycle', () => {
  let db: TestDatabase;
  let worker: Worker;

  beforeAll(async () => {
    db = await createTestDatabase();
    await registerSums(db);
    worker = await startWorker(db);
  });
  afterAll(async () => {
    await worker?.stop();
    await db?.drop();
  });

  const table = (name: string) => createSumsTable(db, name);
  const insert = (name: string, from: number, to: number) => insertSums(db, name, from, to);
  const drained = (deployment: string, name: string) =>
    waitFor(async () => (await pending(db, deployment)) === 0 && (await db.sql(`SELECT 1 FROM ${name} WHERE total IS NULL LIMIT 1`)).length === 0,
      `${deployment} scored`);

  it('splits 90/10 by a stable hash of the key; a row keeps its variant when rescored; promote ends the split', async () => {
    await table('ab');
    await db.sql(`SELECT ml.deploy('ab', 'ab', 'sums', $1, $2, '{"variants": {"sums@1": 90, "sums@2": 10}}')`, [INPUTS, OUTPUTS]);
    await insert('ab', 1, 20_000);
    await drained('ab', 'ab');
    const split = await db.sql<{ model: string; rows: string; right: string }>(`
      SELECT ab_model AS model, count(*) AS rows,
             count(*) FILTER (WHERE total = CASE ab_model WHEN 'sums@1' THEN ${V1} ELSE ${V2} END) AS right
        FROM ab GROUP BY 1 ORDER BY 1`);
    expect(split.map((s) => s.model)).toEqual(['sums@1', 'sums@2']);
    for (const s of split) expect(s.right).toBe(s.rows);
    const share = Number(split[1]!.rows) / 20_000;
    expect(share).toBeGreaterThan(0.08);
    expect(share).toBeLessThan(0.12);
    // The worker's assignment is the documented hash of the key: the same rows, whoever scores them.
    const expected = Array.from({ length: 20_000 }, (_, i) => keyPosition([String(i + 1)]) >= 0.9).filter(Boolean).length;
    expect(Number(split[1]!.rows)).toBe(expected);

    const before = await db.sql<{ id: number; ab_model: string }>(`SELECT id, ab_model FROM ab ORDER BY id`);
    await db.sql(`UPDATE ab SET d = d + 1`);
    await waitFor(async () => (await db.sql(`SELECT 1 FROM ab WHERE total <> CASE ab_model WHEN 'sums@1' THEN ${V1} ELSE ${V2} END LIMIT 1`)).length === 0
      && (await pending(db, 'ab')) === 0, 'rescored');
    const after = await db.sql<{ id: number; ab_model: string }>(`SELECT id, ab_model FROM ab ORDER BY id`);
    expect(after).toEqual(before);

    // New weights apply without a restart.
    await db.sql(`SELECT ml.split('ab', '{"sums@1": 50, "sums@2": 50}')`);
    await db.sql(`UPDATE ab SET d = d + 1 WHERE id <= 4000`);
    await waitFor(async () => (await pending(db, 'ab')) === 0
      && (await db.sql(`SELECT 1 FROM ab WHERE id <= 4000 AND total <> CASE ab_model WHEN 'sums@1' THEN ${V1} ELSE ${V2} END LIMIT 1`)).length === 0,
      'rescored at 50/50');
    const [half] = await db.sql<{ v2: string }>(`SELECT count(*) FILTER (WHERE ab_model = 'sums@2') AS v2 FROM ab WHERE id <= 4000`);
    expect(Number(half!.v2) / 4000).toBeGreaterThan(0.45);
    expect(Number(half!.v2) / 4000).toBeLessThan(0.55);

    // The log records each variant's predictions; ml.compare counts them.
    const compare = await db.sql<{ model: string; role: string; rows: string }>(
      `SELECT model, role, rows FROM ml.compare WHERE deployment = 'ab' ORDER BY model`);
    expect(compare.map((c) => [c.model, c.role])).toEqual([['sums@1', 'variant'], ['sums@2', 'variant']]);
    expect(compare.reduce((n, c) => n + Number(c.rows), 0)).toBe(20_000 + 20_000 + 4000);

    // Promoting ends the split: every new prediction comes from the promoted version.
    await db.sql(`SELECT ml.promote('sums', 2)`);
    const [options] = await db.sql<{ options: Record<string, unknown> }>(`SELECT options FROM ml.deployments WHERE deployment = 'ab'`);
    expect(options!.options).toEqual({});
    await db.sql(`UPDATE ab SET d = d + 1 WHERE id <= 1000`);
    await waitFor(async () => (await db.sql(`SELECT 1 FROM ab WHERE id <= 1000 AND (ab_model <> 'sums@2' OR total <> ${V2}) LIMIT 1`)).length === 0,
      'promoted version scores everything');
    await db.sql(`SELECT ml.rollback('sums')`);
  });

  it('a promotion mid-traffic switches new predictions without losing or double-scoring a row', async () => {
    await table('midway');
    await db.sql(`SELECT ml.deploy('midway', 'midway', 'sums', $1, $2)`, [INPUTS, OUTPUTS]);
    // The writer goes on until 20 statements of 100 rows after the promotion committed, so the
    // promotion lands mid-traffic however fast the writes and the worker are.
    let promoted = false;
    let rows = 0;
    const writer = (async () => {
      for (let after = 0; after < 20 && rows < 500_000; after += promoted ? 1 : 0) {
        await insert('midway', rows + 1, rows + 100);
        rows += 100;
      }
    })();
    await waitFor(async () => (await db.sql(`SELECT 1 FROM midway WHERE total IS NOT NULL LIMIT 1`)).length === 1, 'first predictions');
    await db.sql(`SELECT ml.promote('sums', 2)`);
    promoted = true;
    await writer;
    await drained('midway', 'midway');
    // Every row was scored exactly once (the log holds one prediction per key), by the version
    // its provenance names, and the rows written after the promotion by version 2.
    const [log] = await db.sql<{ predictions: string; keys: string; mismatched: string }>(`
      SELECT count(*) AS predictions, count(DISTINCT p.row_key) AS keys,
             count(*) FILTER (WHERE p.model <> m.midway_model OR (p.outputs->>'total')::float8 <> m.total) AS mismatched
        FROM ml._predictions p JOIN midway m ON m.id = (p.row_key->>'id')::int
       WHERE p.deployment_id = (SELECT id FROM ml._deployments WHERE name = 'midway')`);
    expect(log).toEqual({ predictions: String(rows), keys: String(rows), mismatched: '0' });
    const [versions] = await db.sql<{ v1: string; v2: string; wrong: string }>(`
      SELECT count(*) FILTER (WHERE midway_model = 'sums@1') AS v1, count(*) FILTER (WHERE midway_model = 'sums@2') AS v2,
             count(*) FILTER (WHERE total <> CASE midway_model WHEN 'sums@1' THEN ${V1} ELSE ${V2} END) AS wrong FROM midway`);
    expect(Number(versions!.v1)).toBeGreaterThan(0);
    expect(Number(versions!.v2)).toBeGreaterThan(0);
    expect(versions!.wrong).toBe('0');
    await db.sql(`SELECT ml.rollback('sums')`);
  });

  it('scores a shadow into the log and ml.compare, never into the table, and promotes it with one call', async () => {
    await table('shadowed');
    await db.sql(`SELECT ml.deploy('shadowed', 'shadowed', 'sums', $1, $2, '{"shadow": "sums@2"}')`, [INPUTS, OUTPUTS]);
    await insert('shadowed', 1, 3000);
    await drained('shadowed', 'shadowed');
    await waitFor(async () => (await db.sql(`SELECT 1 FROM ml.compare WHERE deployment = 'shadowed' AND role = 'shadow' AND rows = 3000`)).length === 1,
      'shadow logged');
    // The table holds only the live version's predictions.
    const [table1] = await db.sql<{ wrong: string; models: string[] }>(
      `SELECT count(*) FILTER (WHERE total <> ${V1}) AS wrong, array_agg(DISTINCT shadowed_model) AS models FROM shadowed`);
    expect(table1).toEqual({ wrong: '0', models: ['sums@1'] });
    // The log holds the shadow's: exactly what version 2 computes for each row.
    const [log] = await db.sql<{ rows: string; right: string }>(`
      SELECT count(*) AS rows, count(*) FILTER (WHERE (p.outputs->>'total')::float8 = ${V2}) AS right
        FROM ml._predictions p JOIN shadowed s ON s.id = (p.row_key->>'id')::int
       WHERE p.role = 'shadow' AND p.deployment_id = (SELECT id FROM ml._deployments WHERE name = 'shadowed')`);
    expect(log).toEqual({ rows: '3000', right: '3000' });
    // ml.compare: the shadow against the live model on the same rows; total is a number, so the
    // agreement is its mean absolute difference, here mean(|d - e|) computed from the table.
    const [[shadow], [truth]] = await Promise.all([
      db.sql<{ model: string; rows: string; compared: string; mean_abs_diff: number; agreement: number | null; dead_letters: string; score_us_per_row: number }>(
        `SELECT * FROM ml.compare WHERE deployment = 'shadowed' AND role = 'shadow'`),
      db.sql<{ mad: number }>(`SELECT avg(abs((${V2}) - (${V1})))::float8 AS mad FROM shadowed`),
    ]);
    expect(shadow).toMatchObject({ model: 'sums@2', rows: '3000', compared: '3000', agreement: null, dead_letters: '0' });
    expect(shadow!.mean_abs_diff).toBeCloseTo(truth!.mad, 3);
    expect(shadow!.score_us_per_row).toBeGreaterThan(0);

    expect(await db.sql(`SELECT ml.promote_shadow('shadowed') AS ref`)).toEqual([{ ref: 'sums@2' }]);
    // The deployment follows production, and production is version 2 now.
    const [after] = await db.sql<{ model: string; model_version: number; options: unknown }>(
      `SELECT model, model_version, options FROM ml.deployments WHERE deployment = 'shadowed'`);
    expect(after).toEqual({ model: 'sums', model_version: 2, options: {} });
    await insert('shadowed', 3001, 3100);
    await waitFor(async () => (await db.sql(`SELECT 1 FROM shadowed WHERE id > 3000 AND (total IS NULL OR total <> ${V2} OR shadowed_model <> 'sums@2') LIMIT 1`)).length === 0,
      'the promoted shadow scores');
    await expect(db.sql(`SELECT ml.promote_shadow('shadowed')`)).rejects.toThrow('deployment "shadowed" has no shadow model');
  });

  it('compares labels: a shadow classifier\'s agreement is the share of rows where both labels match', async () => {
    await push(db, 'logreg', 'breast_cancer_logreg.onnx');
    await push(db, 'gbm', 'breast_cancer_gbm.onnx');
    await db.sql(`CREATE TABLE tumours (id int PRIMARY KEY, features real[])`);
    // Features drawn around the training data's scale, so the two models disagree on some rows.
    await db.sql(`INSERT INTO tumours SELECT g, ARRAY(SELECT (random() * 2) * m FROM unnest(ARRAY[14,19,92,655,0.1,0.1,0.09,0.05,0.18,0.06,0.4,1.2,2.9,40,0.007,0.025,0.03,0.012,0.02,0.004,16,25,107,880,0.13,0.25,0.27,0.11,0.29,0.08]::real[]) m WHERE g > 0)
                    FROM generate_series(1, 2000) g`);
    await db.sql(`SELECT ml.deploy('lr', 'tumours', 'logreg', '{"X": "features"}', '{"lr_label": "label"}', '{"shadow": "gbm", "provenance": false}')`);
    await db.sql(`SELECT ml.deploy('tree', 'tumours', 'gbm', '{"X": "features"}', '{"tree_label": "label"}', '{"provenance": false}')`);
    await waitFor(async () => (await db.sql(`SELECT 1 FROM tumours WHERE lr_label IS NULL OR tree_label IS NULL LIMIT 1`)).length === 0, 'both scored');
    await waitFor(async () => (await db.sql(`SELECT 1 FROM ml.compare WHERE deployment = 'lr' AND role = 'shadow' AND rows = 2000`)).length === 1, 'shadow logged');
    const [[shadow], [truth]] = await Promise.all([
      db.sql<{ agreement: number; mean_abs_diff: number | null }>(`SELECT agreement, mean_abs_diff FROM ml.compare WHERE deployment = 'lr' AND role = 'shadow'`),
      db.sql<{ agreement: number }>(`SELECT avg((lr_label = tree_label)::int)::float8 AS agreement FROM tumours`),
    ]);
    expect(shadow!.mean_abs_diff).toBeNull();
    expect(shadow!.agreement).toBeCloseTo(truth!.agreement, 9);
    expect(truth!.agreement).toBeGreaterThan(0);
    expect(truth!.agreement).toBeLessThan(1);
  });

  it('samples the live model into the log, logs dead letters, and keeps the log by day with a retention', async () => {
    await table('sampled');
    await db.sql(`SELECT ml.deploy('sampled', 'sampled', 'sums', $1, $2, '{"log_sample": 0.25}')`, [INPUTS, OUTPUTS]);
    await insert('sampled', 1, 8000);
    await db.sql(`INSERT INTO sampled VALUES (-1, 'NaN', 1, 1, 1, 1, true, 't')`);
    await waitFor(async () => (await pending(db, 'sampled')) === 0
      && (await db.sql(`SELECT 1 FROM sampled WHERE total IS NULL AND id > 0 LIMIT 1`)).length === 0, 'drained');
    const [logged] = await db.sql<{ rows: string; dead: string }>(`
      SELECT count(*) FILTER (WHERE error IS NULL) AS rows, count(*) FILTER (WHERE error IS NOT NULL) AS dead
        FROM ml._predictions WHERE deployment_id = (SELECT id FROM ml._deployments WHERE name = 'sampled')`);
    expect(Number(logged!.rows)).toBeGreaterThan(8000 * 0.2);
    expect(Number(logged!.rows)).toBeLessThan(8000 * 0.3);
    expect(logged!.dead).toBe('1');

    // A logged batch is one row of the log's table (one array element per prediction).
    const [stored] = await db.sql<{ batches: string; predictions: string }>(`
      SELECT count(*) AS batches, sum(cardinality(row_keys)) AS predictions FROM ml._prediction_batches
       WHERE deployment_id = (SELECT id FROM ml._deployments WHERE name = 'sampled')`);
    expect(Number(stored!.predictions)).toBe(Number(logged!.rows) + 1);
    expect(Number(stored!.batches)).toBeLessThan(Number(stored!.predictions) / 10);

    // One partition per UTC day, a week ahead; past the retention they are dropped.
    const partitions = async () => (await db.sql<{ relname: string }>(
      `SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'ml._prediction_batches'::regclass ORDER BY 1`)).map((r) => r.relname);
    const today = (await db.sql<{ d: string }>(`SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYYMMDD') AS d`))[0]!.d;
    expect(await partitions()).toContain(`_prediction_batches_${today}`);
    await db.sql(`CREATE TABLE ml._prediction_batches_20200101 PARTITION OF ml._prediction_batches FOR VALUES FROM ('2020-01-01 00:00+00') TO ('2020-01-02 00:00+00')`);
    await expect(db.sql(`SELECT ml.configure('prediction_log_retention', '1 hour')`)).rejects.toThrow('prediction_log_retention must be at least 1 day');
    await expect(db.sql(`SELECT ml.configure('log_retention', '1 day')`)).rejects.toThrow(`setting 'log_retention' does not exist`);
    await db.sql(`SELECT ml.configure('prediction_log_retention', '2 days')`);
    await db.sql(`SELECT ml._maintain()`);
    expect(await partitions()).not.toContain('_prediction_batches_20200101');
    expect(await partitions()).toContain(`_prediction_batches_${today}`);
    expect(await db.sql(`SELECT name, value, "default" FROM ml.settings ORDER BY name`)).toEqual([
      { name: 'baseline_rows', value: '1000', default: '1000' },
      { name: 'drift_min_rows', value: '500', default: '500' },
      { name: 'prediction_log_retention', value: '2 days', default: '30 days' },
    ]);
  });

  it('refuses bad lifecycle options with the reason', async () => {
    await table('bad');
    await push(db, 'other', 'breast_cancer_gbm.onnx');
    const deploy = (options: string) => db.sql(`SELECT ml.deploy('bad', 'bad', 'sums', $1, $2, $3)`, [INPUTS, OUTPUTS, options]);
    await expect(deploy('{"variants": {"sums@9": 10}}')).rejects.toThrow('variant model sums@9 does not exist (versions: 1, 2)');
    await expect(deploy('{"variants": {"sums@1": -1}}')).rejects.toThrow('variant "sums@1" has weight -1; a weight is a number of 0 or more');
    await expect(deploy('{"variants": {"sums@1": 0}}')).rejects.toThrow('the weights of option "variants" add up to 0');
    await expect(deploy('{"variants": ["sums@1"]}')).rejects.toThrow('option "variants" must be an object of model versions and weights');
    await expect(deploy('{"shadow": "nope"}')).rejects.toThrow('shadow model "nope" is not registered');
    await expect(deploy('{"shadow": "other"}')).rejects.toThrow('shadow other@1 does not fit the deployment: inputs maps "f32", but model other@1 has no input of that name');
    await expect(deploy('{"log_sample": 2}')).rejects.toThrow('option "log_sample" must be between 0 and 1');
    await expect(deploy('{"schedule": "0 2 * * *"}')).rejects.toThrow('option "schedule" needs "mode": "batch"');
    await expect(deploy('{"mode": "nightly"}')).rejects.toThrow(`option "mode" must be 'live' or 'batch'`);
    await expect(deploy('{"mode": "batch", "schedule": "0 25 * * *"}')).rejects.toThrow(`schedule '0 25 * * *': hour 25 is out of range (0-23)`);
    await expect(deploy('{"mode": "batch", "schedule": "every night"}')).rejects.toThrow('it has 2 field(s), a cron expression has 5');
    await expect(deploy('{"mode": "batch", "schedule": "@daily", "timezone": "Mars/Olympus"}')).rejects.toThrow('"Mars/Olympus" is not a time zone Postgres knows');
    await expect(deploy('{"mode": "batch", "filter": "a + 1"}')).rejects.toThrow('option "filter" (a + 1) is not a condition (it gives double precision)');
    await expect(deploy('{"mode": "batch", "filter": "a > 0; DROP TABLE bad"}')).rejects.toThrow('is refused: it contains ";"');
    await expect(deploy('{"canary": true}')).rejects.toThrow('option "canary" is not supported by this version of pgscore');
    await expect(db.sql(`SELECT ml.split('nope', '{}')`)).rejects.toThrow('deployment "nope" does not exist');
    expect(await db.sql(`SELECT count(*)::int AS n FROM ml._deployments WHERE name = 'bad'`)).toEqual([{ n: 0 }]);
  });
});
