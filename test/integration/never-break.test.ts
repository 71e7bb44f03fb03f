import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Worker } from '../../src/worker/worker.js';
import { createTestDatabase, pending, push, startWorker, waitFor, type TestDatabase } from '../helpers/db.js';

/**
 * Class 1 of Step 8: pgscore never makes an application statement fail. Input expressions are
 * evaluated only by the worker, where a failure is the row's dead letter; the triggers decide
 * whether inputs changed from the columns the expressions read.
 */
describe('input expressions that fail on a row', () => {
  let db: TestDatabase;
  let worker: Worker | undefined;

  const species = async (id: number) =>
    (await db.sql<{ species: string | null }>(`SELECT species FROM flowers WHERE id = $1`, [id]))[0]?.species;
  const errors = () =>
    db.sql<{ id: number; reason: string }>(
      `SELECT (row_key->>'id')::int AS id, reason FROM ml.errors WHERE deployment = 'flowers' ORDER BY 1`);

  beforeAll(async () => {
    db = await createTestDatabase();
    await push(db, 'iris', 'iris.onnx');
    // Inputs arrive as text (a staging table) and b may be zero: casts and divisions can fail.
    await db.sql(`CREATE TABLE flowers (id int PRIMARY KEY, a text, b text, c text, d text, scale real NOT NULL DEFAULT 1,
                                        payload json, note text)`);
    await db.sql(`SELECT ml.deploy('flowers', 'flowers', 'iris',
      inputs => '{"X": ["a::real", "b::real", "c::real / scale", "(payload->>''d'')::real"]}',
      outputs => '{"species": "label"}')`);
  });
  afterAll(async () => {
    await worker?.stop();
    await db?.drop();
  });

  it('lets every application statement through while a row holds a value its expression cannot take', async () => {
    await db.sql(`INSERT INTO flowers (id, a, b, c, d, payload) VALUES
      (1, '5.1', '3.5', '1.4', '0.2', '{"d": 0.2}'),
      (2, 'abc', '3.0', '1.4', '0.2', '{"d": 0.2}')`);
    // An unrelated column, an input column left bad, an input column fixed: none of them fails.
    await db.sql(`UPDATE flowers SET note = 'seen'`);
    await db.sql(`UPDATE flowers SET b = '3.1' WHERE id = 2`);
    await db.sql(`UPDATE flowers SET scale = 0 WHERE id = 1`);          // 1.4 / 0: division by zero
    await db.sql(`UPDATE flowers SET payload = '{"d": "x"}' WHERE id = 1`);  // a json column, no equality
    const rows = await db.sql<{ id: number; note: string }>(`SELECT id, note FROM flowers ORDER BY id`);
    expect(rows).toEqual([{ id: 1, note: 'seen' }, { id: 2, note: 'seen' }]);
    // Rows whose inputs changed are queued; the unrelated UPDATE queued nothing.
    expect(await pending(db, 'flowers')).toBeGreaterThan(0);
  });

  it('turns each failing row into a dead letter naming its expression, and scores the others', async () => {
    await db.sql(`INSERT INTO flowers (id, a, b, c, d, payload)
                  SELECT i, '6.5', '3.0', '5.5', '2.0', '{"d": 2.0}' FROM generate_series(10, 59) i`);
    worker = await startWorker(db);
    await waitFor(async () => (await pending(db, 'flowers')) === 0 && (await errors()).length === 2, 'rows handled');
    const reasons = await errors();
    expect(reasons.map((r) => r.id)).toEqual([1, 2]);
    expect(reasons[0]!.reason).toMatch(/^model input X: expression \(c::real \/ scale\) failed: division by zero$|^model input X: expression \(\(payload->>'d'\)::real\) failed: invalid input syntax for type real: "x"$/);
    expect(reasons[1]!.reason).toBe('model input X: expression (a::real) failed: invalid input syntax for type real: "abc"');
    const scored = await db.sql<{ n: string }>(`SELECT count(*) AS n FROM flowers WHERE species IS NOT NULL`);
    expect(scored[0]!.n).toBe('50');
    const [status] = await db.sql<{ status: string }>(`SELECT status FROM ml.deployments WHERE deployment = 'flowers'`);
    expect(status!.status).toBe('active');
  });

  it('scores a fixed row and clears its dead letter', async () => {
    await db.sql(`UPDATE flowers SET a = '5.0' WHERE id = 2`);
    await waitFor(async () => (await species(2)) !== null, 'fixed row scored');
    expect((await errors()).map((r) => r.id)).toEqual([1]);
  });
});

/**
 * Class 2 of Step 8: a row the write-back cannot write becomes a dead letter with the database's
 * reason while the rest of its batch is written; a table no write can reach turns the deployment
 * invalid with the reason, and raises the alert.
 */
describe('rows the table will not take', () => {
  let db: TestDatabase;
  let worker: Worker | undefined;
  const IRIS = `sepal_length real NOT NULL, sepal_width real NOT NULL, petal_length real NOT NULL, petal_width real NOT NULL`;
  const INPUTS = `'{"X": ["sepal_length", "sepal_width", "petal_length", "petal_width"]}'`;
  const ROWS = (table: string, n: number) =>
    `INSERT INTO ${table} SELECT i, 5.1, 3.5, 1.4, 0.2 FROM generate_series(1, ${n}) i`;

  beforeAll(async () => {
    db = await createTestDatabase();
    await push(db, 'iris', 'iris.onnx');
    worker = await startWorker(db);
  });
  afterAll(async () => {
    await worker?.stop();
    await db?.drop();
  });

  it('a CHECK constraint on a prediction column: the row it refuses is a dead letter, the other 49 are scored', async () => {
    await db.sql(`CREATE TABLE checked (id int PRIMARY KEY, ${IRIS}, species text CONSTRAINT no_seven CHECK (species IS NULL OR id <> 7))`);
    await db.sql(`SELECT ml.deploy('checked', 'checked', 'iris', inputs => ${INPUTS}, outputs => '{"species": "label"}')`);
    await db.sql(ROWS('checked', 50));
    await waitFor(async () => (await pending(db, 'checked')) === 0, 'batch handled');
    const scored = await db.sql<{ n: string }>(`SELECT count(*) AS n FROM checked WHERE species = 'setosa'`);
    expect(scored[0]!.n).toBe('49');
    const errors = await db.sql<{ row_key: unknown; reason: string }>(`SELECT row_key, reason FROM ml.errors WHERE deployment = 'checked'`);
    expect(errors).toEqual([{ row_key: { id: 7 }, reason:
      'the prediction cannot be written to the table: new row for relation "checked" violates check constraint "no_seven"' }]);
  });

  it('a check that needs a permission the worker lacks, for one row: that row is a dead letter that says so', async () => {
    await db.sql(`CREATE TABLE audit_log (id int)`);  // the worker may not read it
    // A superuser's function (allowed in a CHECK) that reads audit_log for row 5 only.
    await db.sql(`CREATE FUNCTION audited_ok(p_id int, p_species text) RETURNS boolean LANGUAGE plpgsql AS $$
      BEGIN IF p_id = 5 AND p_species IS NOT NULL THEN RETURN NOT EXISTS (SELECT 1 FROM public.audit_log); END IF; RETURN true; END $$`);
    await db.sql(`CREATE TABLE audited (id int PRIMARY KEY, ${IRIS}, species text CHECK (audited_ok(id, species)))`);
    await db.sql(`SELECT ml.deploy('audited', 'audited', 'iris', inputs => ${INPUTS}, outputs => '{"species": "label"}')`);
    await db.sql(ROWS('audited', 10));
    await waitFor(async () => (await pending(db, 'audited')) === 0 &&
      (await db.sql(`SELECT 1 FROM ml.errors WHERE deployment = 'audited'`)).length === 1, 'batch handled', 20_000);
    const scored = await db.sql<{ n: string }>(`SELECT count(*) AS n FROM audited WHERE species = 'setosa'`);
    expect(scored[0]!.n).toBe('9');
    const errors = await db.sql<{ row_key: unknown; reason: string }>(`SELECT row_key, reason FROM ml.errors WHERE deployment = 'audited'`);
    expect(errors).toEqual([{ row_key: { id: 5 }, reason: 'the prediction cannot be written to the table: permission denied for table audit_log' }]);
  });

  it('a table in a publication without a replica identity: the deployment turns invalid with the reason and raises the alert', async () => {
    await db.sql(`CREATE TABLE published (id int PRIMARY KEY, ${IRIS}, species text)`);
    await db.sql(`ALTER TABLE published REPLICA IDENTITY NOTHING`);
    await db.sql(`CREATE PUBLICATION published_pub FOR TABLE published`);
    await db.sql(`SELECT ml.deploy('published', 'published', 'iris', inputs => ${INPUTS}, outputs => '{"species": "label"}')`);
    await db.sql(ROWS('published', 10));
    const reason = 'predictions cannot be written to the table: cannot update table "published" because it does not have a replica identity and publishes updates';
    await waitFor(async () => (await db.sql<{ status: string }>(
      `SELECT status FROM ml.deployments WHERE deployment = 'published'`))[0]?.status === 'invalid', 'deployment invalid');
    const [deployment] = await db.sql<{ reason: string }>(`SELECT reason FROM ml.deployments WHERE deployment = 'published'`);
    expect(deployment!.reason).toBe(reason);
    // Its rows stay queued for when it is deployed again; nothing was written.
    expect(await pending(db, 'published')).toBe(10);
    await db.sql(`SELECT ml._check_alerts()`);
    const alerts = await db.sql<{ alert: string; detail: { reason: string } }>(`SELECT alert, detail FROM ml.alerts WHERE deployment = 'published'`);
    expect(alerts.map((a) => [a.alert, a.detail.reason])).toEqual([['invalid', reason]]);
    // The application's writes go on, and are queued too (the generated suite found rows written
    // after the invalidation in no state at all).
    await db.sql(ROWS('published', 12).replace('generate_series(1, 12)', 'generate_series(11, 12)'));
    expect(await pending(db, 'published')).toBe(12);
    // Fixed and deployed again: every row is scored.
    await db.sql(`ALTER TABLE published REPLICA IDENTITY FULL`);
    await db.sql(`SELECT ml.deploy('published', 'published', 'iris', inputs => ${INPUTS}, outputs => '{"species": "label"}')`);
    await waitFor(async () => (await db.sql(`SELECT 1 FROM published WHERE species IS NOT NULL`)).length === 12, 'all 12 rows scored');
  });
});
