import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Worker } from '../../src/worker/worker.js';
import { createTestDatabase, pending, push, startWorker, waitFor, type TestDatabase } from '../helpers/db.js';

interface ErrorRow {
  row_key: { site: string; seq: number };
  reason: string;
  attempts: number;
}

describe('bad rows become dead letters and never block the rest of their batch', () => {
  let db: TestDatabase;
  let worker: Worker;

  const errors = () =>
    db.sql<ErrorRow>(`SELECT row_key, reason, attempts FROM ml.errors WHERE deployment = 'readings' ORDER BY row_key->>'seq'`);
  const total = async (seq: number) =>
    (await db.sql<{ total: number | null }>(`SELECT total FROM readings WHERE seq = $1`, [seq]))[0]?.total;

  beforeAll(async () => {
    db = await createTestDatabase();
    await push(db, 'typed', 'typed.onnx');
    await db.sql(`CREATE TABLE readings (
      site text, seq int, a real, b numeric, c double precision, d numeric, e bigint, ok boolean, tag text, pair real[],
      PRIMARY KEY (site, seq))`);
    await db.sql(`SELECT ml.deploy('readings', 'readings', 'typed',
      inputs => '{"f32": "pair", "f64": "c", "i32": "d", "i64": "e", "flag": "ok", "tag": "tag"}')`);
    worker = await startWorker(db);
    // One statement, so one batch: two good rows among rows that each break a different rule.
    await db.sql(`INSERT INTO readings (site, seq, pair, c, d, e, ok, tag) VALUES
      ('x', 1, '{1,2}',   1,          1,    1, true,  'good'),
      ('x', 2, '{1,2}',   NULL,       1,    1, true,  'null'),
      ('x', 3, '{1,2}',   'NaN',      1,    1, true,  'nan'),
      ('x', 4, '{1,2}',   'Infinity', 1,    1, true,  'inf'),
      ('x', 5, '{1,2,3}', 1,          1,    1, true,  'long array'),
      ('x', 6, '{1,2}',   1,          3.5,  1, true,  'not an integer'),
      ('x', 7, '{1,2}',   1,          3e9,  1, true,  'outside int32'),
      ('x', 8, '{1,NULL}', 1,         1,    1, true,  'null element'),
      ('x', 9, '{1,2}',   2,          2,    2, false, 'good')`);
    await waitFor(async () => (await pending(db, 'readings')) === 0 && (await errors()).length === 7, 'batch handled');
  });
  afterAll(async () => {
    await worker?.stop();
    await db?.drop();
  });

  it('scores the good rows of the batch', async () => {
    expect(await total(1)).toBe(7);
    expect(await total(9)).toBe(9);
  });

  it('records each bad row with a reason a person can act on', async () => {
    expect((await errors()).map((e) => [e.row_key, e.reason])).toEqual([
      [{ site: 'x', seq: 2 }, 'column "c" is NULL; model input f64 has no NULL'],
      [{ site: 'x', seq: 3 }, 'column "c" is NaN; model input f64 takes finite numbers'],
      [{ site: 'x', seq: 4 }, 'column "c" is Infinity; model input f64 takes finite numbers'],
      [{ site: 'x', seq: 5 }, 'column "pair" has 3 elements; model input f32 takes 2'],
      [{ site: 'x', seq: 6 }, 'column "d" is "3.5", not an integer; model input i32 is int32'],
      [{ site: 'x', seq: 7 }, 'column "d" is "3000000000", outside int32; model input i32 is int32'],
      [{ site: 'x', seq: 8 }, 'column "pair"[2] is NULL; model input f32 has no NULL'],
    ]);
    const [status] = await db.sql<{ dead_letters: string }>(`SELECT dead_letters FROM ml.status`);
    expect(status!.dead_letters).toBe('7');
  });

  it('ml.retry queues dead letters again; still-bad rows come back with more attempts', async () => {
    const [retried] = await db.sql<{ n: string }>(`SELECT ml.retry('readings') AS n`);
    expect(retried!.n).toBe('7');
    await waitFor(async () => (await errors()).every((e) => e.attempts === 2), 'retried');
    expect(await errors()).toHaveLength(7);
  });

  it('after the cause is fixed, ml.retry scores the row and clears its dead letter', async () => {
    await waitFor(async () => (await pending(db, 'readings')) === 0, 'retry finished');
    // Fix the data without firing the trigger, as a repair outside pgscore's view would.
    await db.sql(`BEGIN; SET LOCAL pgscore.writeback = 'on'; UPDATE readings SET c = 5 WHERE seq = 2; COMMIT;`);
    expect(await total(2)).toBeNull();
    await db.sql(`SELECT ml.retry('readings')`);
    await waitFor(async () => (await total(2)) === 11, 'fixed row scored');
    expect((await errors()).map((e) => e.row_key.seq)).not.toContain(2);
  });

  it('an UPDATE that fixes the inputs rescores the row and clears its dead letter', async () => {
    await db.sql(`UPDATE readings SET c = 1 WHERE seq IN (3, 4)`);
    await waitFor(async () => (await total(3)) === 7 && (await total(4)) === 7, 'fixed rows scored');
    expect((await errors()).map((e) => e.row_key.seq)).toEqual([5, 6, 7, 8]);
  });
});
