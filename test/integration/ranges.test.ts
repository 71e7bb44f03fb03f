import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Worker } from '../../src/worker/worker.js';
import { createTestDatabase, pending, push, startWorker, waitFor, type TestDatabase } from '../helpers/db.js';

/**
 * Range entries (sql/functions/030_generate.sql): a bulk INSERT whose keys are one integer column
 * and nearly contiguous queues key ranges, read by the claim with an index range scan. What a user
 * sees must not change: every row scored from its current inputs, ml.status counting exactly,
 * nothing hidden or lost. examples/models/typed.onnx computes total = a + b + c + d + e + ok, so
 * each row's expected prediction is plain SQL.
 */
const TYPED_INPUTS = '{"f32": ["a", "b"], "f64": "c", "i32": "d", "i64": "e", "flag": "ok", "tag": "tag"}';
const EXPECTED = 'a + b + c + d + e + ok::int';
const COLUMNS = 'a real, b real, c double precision, d int, e bigint, ok boolean, tag text';
const VALUES = (g: string) => `${g} % 7, ${g} % 11, ${g} % 13, ${g} % 17, ${g} % 1000, ${g} % 2 = 0, 't'`;

describe('range entries for bulk INSERTs', () => {
  let db: TestDatabase;
  let worker: Worker | undefined;

  beforeAll(async () => {
    db = await createTestDatabase();
    await push(db, 'typed', 'typed.onnx');
  });
  afterAll(async () => {
    await worker?.stop();
    await db?.drop();
  });

  const deploy = async (table: string, options = '{}') =>
    db.sql(`SELECT ml.deploy($1, $2, 'typed', $3, '{"total": "total"}', $4)`, [table, table, TYPED_INPUTS, options]);
  /** The deployment's queue: range entries, key entries, keys counted. */
  const queue = async (table: string) => {
    const [{ id }] = (await db.sql<{ id: number }>(`SELECT id FROM ml._deployments WHERE name = $1`, [table])) as [{ id: number }];
    return db.sql<{ ranges: string; keyed: string; n: string }>(
      `SELECT count(*) FILTER (WHERE pgscore_lo IS NOT NULL) AS ranges, count(*) FILTER (WHERE pgscore_lo IS NULL) AS keyed,
              coalesce(sum(pgscore_n), 0) AS n FROM ml._queue_${id}`);
  };
  const check = async (table: string) =>
    (await db.sql<{ total: string; scored: string; wrong: string }>(
      `SELECT count(*) AS total, count(total) AS scored, count(*) FILTER (WHERE total IS DISTINCT FROM ${EXPECTED}) AS wrong FROM ${table}`))[0]!;
  const drained = async (table: string) => {
    worker ??= await startWorker(db);
    await waitFor(async () => (await check(table)).wrong === '0' && (await pending(db, table)) === 0, `${table} scored`, 30_000);
    return check(table);
  };
  const stopWorker = async () => {
    await worker?.stop();
    worker = undefined;
  };

  it('a 5,000-row INSERT with a serial key queues 10 ranges, counted exactly, and every row is scored', async () => {
    await stopWorker();
    await db.sql(`CREATE TABLE serial_rows (id bigserial PRIMARY KEY, ${COLUMNS})`);
    await deploy('serial_rows');
    await db.sql(`INSERT INTO serial_rows (a, b, c, d, e, ok, tag) SELECT ${VALUES('g')} FROM generate_series(1, 5000) g`);
    expect(await queue('serial_rows')).toEqual([{ ranges: '10', keyed: '0', n: '5000' }]);
    expect(await pending(db, 'serial_rows')).toBe(5000);
    expect(await drained('serial_rows')).toEqual({ total: '5000', scored: '5000', wrong: '0' });
  });

  it('sparse keys (every tenth value) stay key entries', async () => {
    await stopWorker();
    await db.sql(`CREATE TABLE sparse_rows (id int PRIMARY KEY, ${COLUMNS})`);
    await deploy('sparse_rows');
    await db.sql(`INSERT INTO sparse_rows SELECT g * 10, ${VALUES('g')} FROM generate_series(1, 1000) g`);
    expect(await queue('sparse_rows')).toEqual([{ ranges: '0', keyed: '10', n: '1000' }]);
    expect(await drained('sparse_rows')).toEqual({ total: '1000', scored: '1000', wrong: '0' });
  });

  it('rows changed, deleted and written into the gaps of a range before the claim: newest wins, nothing is lost', async () => {
    await stopWorker();
    await db.sql(`CREATE TABLE changed_rows (id int PRIMARY KEY, ${COLUMNS})`);
    await deploy('changed_rows');
    // Every fifth key is left free for another statement; 4,000 rows span 5,000 values (dense enough).
    await db.sql(`INSERT INTO changed_rows SELECT g, ${VALUES('g')} FROM generate_series(1, 5000) g WHERE g % 5 <> 0`);
    expect((await queue('changed_rows'))[0]!.ranges).toBe('10');
    await db.sql(`UPDATE changed_rows SET a = a + 100 WHERE id % 3 = 0`);
    await db.sql(`DELETE FROM changed_rows WHERE id % 7 = 0`);
    await db.sql(`INSERT INTO changed_rows SELECT g, ${VALUES('g')} FROM generate_series(5, 5000, 5) g`);
    // A row whose key changed leaves its range; it is queued under its new key.
    await db.sql(`UPDATE changed_rows SET id = id + 100000 WHERE id BETWEEN 1 AND 20`);
    const result = await drained('changed_rows');
    const [{ n }] = (await db.sql<{ n: string }>(`SELECT count(*) AS n FROM changed_rows`)) as [{ n: string }];
    expect(result).toEqual({ total: n, scored: n, wrong: '0' });
    expect(await db.sql(`SELECT * FROM ml.errors WHERE deployment = 'changed_rows'`)).toEqual([]);
  });

  it('under row-level security, rows a policy hides from the worker inside a range become dead letters, the others are scored', async () => {
    await stopWorker();
    await db.sql(`CREATE TABLE secured_rows (id int PRIMARY KEY, ${COLUMNS})`);
    await db.sql(`ALTER TABLE secured_rows ENABLE ROW LEVEL SECURITY`);
    await db.sql(`CREATE POLICY even_only ON secured_rows TO pgscore_worker USING (id % 2 = 0)`);
    await deploy('secured_rows', '{"row_security": "worker_sees_all"}');
    await db.sql(`INSERT INTO secured_rows SELECT g, ${VALUES('g')} FROM generate_series(1, 1000) g`);
    expect((await queue('secured_rows'))[0]!.ranges).toBe('2');
    worker = await startWorker(db);
    await waitFor(async () => (await pending(db, 'secured_rows')) === 0, 'queue drained', 30_000);
    const [counts] = await db.sql<{ scored_even: string; scored_odd: string }>(
      `SELECT count(*) FILTER (WHERE id % 2 = 0 AND total = ${EXPECTED}) AS scored_even,
              count(*) FILTER (WHERE id % 2 = 1 AND total IS NOT NULL) AS scored_odd FROM secured_rows`);
    expect(counts).toEqual({ scored_even: '500', scored_odd: '0' });
    const dead = await db.sql<{ n: string; reason: string }>(
      `SELECT count(*) AS n, min(reason) AS reason FROM ml.errors WHERE deployment = 'secured_rows'`);
    expect(dead[0]!.n).toBe('500');
    expect(dead[0]!.reason).toMatch(/row-level security on public.secured_rows hides this row/);
  });

  it('an input expression failing on some rows of a range: those become dead letters, the others are scored', async () => {
    await stopWorker();
    await db.sql(`CREATE TABLE failing_rows (id int PRIMARY KEY, ${COLUMNS})`);
    await db.sql(`SELECT ml.deploy('failing_rows', 'failing_rows', 'typed', $1, '{"total": "total"}')`,
      ['{"f32": ["a", "b"], "f64": "c / d", "i32": "d", "i64": "e", "flag": "ok", "tag": "tag"}']);
    // d = g % 17 is 0 for 58 of the 1,000 rows: c / d raises division by zero there.
    await db.sql(`INSERT INTO failing_rows SELECT g, ${VALUES('g')} FROM generate_series(1, 1000) g`);
    expect((await queue('failing_rows'))[0]!.ranges).toBe('2');
    worker = await startWorker(db);
    await waitFor(async () => (await pending(db, 'failing_rows')) === 0, 'queue drained', 30_000);
    const [counts] = await db.sql<{ right: string; unscored: string }>(
      `SELECT count(*) FILTER (WHERE d <> 0 AND total = (a + b + c / d + d + e + ok::int)::float8) AS right,
              count(*) FILTER (WHERE total IS NULL) AS unscored FROM failing_rows`);
    expect(counts).toEqual({ right: '942', unscored: '58' });
    const dead = await db.sql<{ n: string; reason: string }>(
      `SELECT count(*) AS n, min(reason) AS reason FROM ml.errors WHERE deployment = 'failing_rows'`);
    expect(dead[0]).toEqual({ n: '58', reason: expect.stringMatching(/division by zero/) });
  });

  it('a queue whose rows were all deleted before the claim empties at once, ranges and key entries alike (F14)', async () => {
    await stopWorker();
    await db.sql(`CREATE TABLE vanished_rows (id int PRIMARY KEY, ${COLUMNS})`);
    await deploy('vanished_rows');
    await db.sql(`INSERT INTO vanished_rows SELECT g, ${VALUES('g')} FROM generate_series(1, 3000) g`);
    await db.sql(`INSERT INTO vanished_rows SELECT g * 10, ${VALUES('g')} FROM generate_series(1000, 2000) g`);
    expect(await queue('vanished_rows')).toEqual([{ ranges: '6', keyed: '11', n: '4001' }]);
    await db.sql(`DELETE FROM vanished_rows`);
    // Small batches: one queue row per claim. A claim that found none of its rows used to count
    // as an empty queue, and the worker slept until its next safety poll (about 2 s) each time.
    worker = await startWorker(db, { batchSize: 100 });
    await waitFor(async () => (await pending(db, 'vanished_rows')) === 0, 'the queue emptied', 10_000);
    expect(await db.sql(`SELECT * FROM ml.errors WHERE deployment = 'vanished_rows'`)).toEqual([]);
  });

  it('a table range-partitioned by its key: one INSERT across three partitions is scored', async () => {
    await stopWorker();
    await db.sql(`CREATE TABLE parted_rows (id int PRIMARY KEY, ${COLUMNS}) PARTITION BY RANGE (id)`);
    for (const [name, from, to] of [['p1', 1, 1001], ['p2', 1001, 2001], ['p3', 2001, 3001]] as const) {
      await db.sql(`CREATE TABLE parted_rows_${name} PARTITION OF parted_rows FOR VALUES FROM (${from}) TO (${to})`);
    }
    await deploy('parted_rows');
    await db.sql(`INSERT INTO parted_rows SELECT g, ${VALUES('g')} FROM generate_series(1, 3000) g`);
    expect((await queue('parted_rows'))[0]!.ranges).toBe('6');
    expect(await drained('parted_rows')).toEqual({ total: '3000', scored: '3000', wrong: '0' });
  });

  it('keys at the end of bigint do not overflow the application\'s INSERT', async () => {
    await stopWorker();
    await db.sql(`CREATE TABLE edge_rows (id bigint PRIMARY KEY, ${COLUMNS})`);
    await deploy('edge_rows');
    await db.sql(`INSERT INTO edge_rows SELECT 9223372036854775807 - g, ${VALUES('g')} FROM generate_series(0, 999) g`);
    await db.sql(`INSERT INTO edge_rows SELECT -9223372036854775808 + g, ${VALUES('g')} FROM generate_series(0, 999) g`);
    // One INSERT spanning the whole type: far from dense, key entries.
    await db.sql(`INSERT INTO edge_rows SELECT g * 4611686018427387, ${VALUES('g')} FROM generate_series(-1000, 1000) g WHERE g <> 0`);
    expect(await drained('edge_rows')).toEqual({ total: '4000', scored: '4000', wrong: '0' });
  });

  it('the key column changed to text while ranges wait: they become key entries and every row is scored', async () => {
    await stopWorker();
    await db.sql(`CREATE TABLE retyped_rows (id int PRIMARY KEY, ${COLUMNS})`);
    await deploy('retyped_rows');
    await db.sql(`INSERT INTO retyped_rows SELECT g, ${VALUES('g')} FROM generate_series(1, 1200) g`);
    expect((await queue('retyped_rows'))[0]!.ranges).toBe('3');
    await db.sql(`ALTER TABLE retyped_rows ALTER COLUMN id TYPE text`);
    expect((await queue('retyped_rows'))[0]).toMatchObject({ ranges: '0', n: '1200' });
    expect(await drained('retyped_rows')).toEqual({ total: '1200', scored: '1200', wrong: '0' });
  });
});
