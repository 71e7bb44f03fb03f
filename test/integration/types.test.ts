import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Worker } from '../../src/worker/worker.js';
import { createTestDatabase, push, startWorker, waitFor, type TestDatabase } from '../helpers/db.js';

/**
 * examples/models/typed.onnx takes one input per element type and returns
 * total = f32[0] + f32[1] + f64 + i32 + i64 + flag, echo = tag, doubled = 2 * i64.
 */
describe('every tensor element type, composite keys, expressions and array columns', () => {
  let db: TestDatabase;
  let worker: Worker;

  beforeAll(async () => {
    db = await createTestDatabase();
    await push(db, 'typed', 'typed.onnx');
    await push(db, 'iris', 'iris.onnx');
    await push(db, 'diabetes', 'diabetes_linreg.onnx');
    worker = await startWorker(db);
  });
  afterAll(async () => {
    await worker?.stop();
    await db?.drop();
  });

  it('feeds float32, float64, int32, int64, bool and string inputs, one tensor per column, by a composite key', async () => {
    await db.sql(`CREATE TABLE readings (
      site text, seq int, a real, b numeric, c double precision, d smallint, e bigint, ok boolean, tag varchar(10),
      PRIMARY KEY (site, seq))`);
    await db.sql(`SELECT ml.deploy('readings', 'readings', 'typed',
      inputs => '{"f32": ["a", "b"], "f64": "c", "i32": "d", "i64": "e", "flag": "ok", "tag": "tag"}')`);
    await db.sql(`INSERT INTO readings VALUES
      ('north', 1, 1.5, 2.25, 0.125, 10, 1000, true, 'x'),
      ('south', 1, 0, 0, 0, 0, 9007199254740993, false, 'big')`);
    const rows = await waitFor(async () => {
      const result = await db.sql<{ site: string; total: number | null; echo: string; doubled: string }>(
        'SELECT site, total, echo, doubled FROM readings ORDER BY site');
      return result.every((r) => r.total !== null) && result;
    }, 'typed predictions');
    expect(rows[0]).toEqual({ site: 'north', total: 1014.875, echo: 'x', doubled: '2000' });
    // int64 stays exact beyond 2^53.
    expect(rows[1]).toMatchObject({ site: 'south', echo: 'big', doubled: '18014398509481986' });
  });

  it('creates prediction columns with the types of the outputs', async () => {
    const columns = await db.sql<{ column_name: string; data_type: string }>(
      `SELECT column_name, data_type FROM information_schema.columns
        WHERE table_name = 'readings' AND column_name IN ('total', 'echo', 'doubled') ORDER BY column_name`);
    expect(columns).toEqual([
      { column_name: 'doubled', data_type: 'bigint' },
      { column_name: 'echo', data_type: 'text' },
      { column_name: 'total', data_type: 'double precision' },
    ]);
  });

  it('feeds a whole tensor row from an array column and a value from an SQL expression', async () => {
    await db.sql(`CREATE TABLE pairs (id int PRIMARY KEY, pair real[], c float8, d int, e bigint, ok bool, tag text)`);
    await db.sql(`SELECT ml.deploy('pairs', 'pairs', 'typed',
      inputs => '{"f32": "pair", "f64": "c * 2", "i32": "d", "i64": "e", "flag": "ok", "tag": "upper(tag)"}',
      outputs => '{"pair_total": "total", "shout": "echo"}')`);
    await db.sql(`INSERT INTO pairs VALUES (1, '{1, 2}', 0.5, 1, 1, false, 'hi')`);
    const [row] = await waitFor(async () => {
      const result = await db.sql<{ pair_total: number | null; shout: string }>('SELECT pair_total, shout FROM pairs');
      return result[0]?.pair_total !== null && result;
    }, 'expression prediction');
    expect(row).toEqual({ pair_total: 6, shout: 'HI' });
  });

  it('rescores when an input expression changes, not when another column does', async () => {
    await db.sql(`UPDATE pairs SET c = 1.5 WHERE id = 1`);
    await waitFor(async () => (await db.sql<{ pair_total: number }>('SELECT pair_total FROM pairs'))[0]!.pair_total === 8, 'rescored');
  });

  it('writes a whole output row into an array column, and regression outputs by index', async () => {
    await db.sql(`CREATE TABLE flowers (id int PRIMARY KEY, sl real, sw real, pl real, pw real)`);
    await db.sql(`SELECT ml.deploy('flowers', 'flowers', 'iris',
      inputs => '{"X": ["sl", "sw", "pl", "pw"]}', outputs => '{"probs": "probabilities"}')`);
    await db.sql(`INSERT INTO flowers VALUES (1, 5.1, 3.5, 1.4, 0.2)`);
    const [row] = await waitFor(async () => {
      const result = await db.sql<{ probs: number[] | null; type: string }>(`SELECT probs, pg_typeof(probs)::text AS type FROM flowers`);
      return result[0]?.probs && result;
    }, 'array prediction');
    expect(row!.type).toBe('real[]');
    expect(row!.probs).toHaveLength(3);
    expect(row!.probs![0]).toBeGreaterThan(0.9);

    const features = Array.from({ length: 10 }, (_, i) => `x${i}`);
    await db.sql(`CREATE TABLE patients (id int PRIMARY KEY, ${features.map((f) => `${f} float8`).join(', ')})`);
    await db.sql(`SELECT ml.deploy('patients', 'patients', 'diabetes', inputs => $1, outputs => '{"progression": "variable[0]"}')`, [
      JSON.stringify({ X: features }),
    ]);
    await db.sql(`INSERT INTO patients VALUES (1, ${features.map(() => '0').join(', ')})`);
    const [patient] = await waitFor(async () => {
      const result = await db.sql<{ progression: number | null }>('SELECT progression FROM patients');
      return result[0]?.progression != null && result;
    }, 'regression prediction');
    // All-zero (mean-centred) features give the intercept: the mean target of the diabetes data set, ~152.
    expect(patient!.progression).toBeCloseTo(152.1, 0);
  });
});
