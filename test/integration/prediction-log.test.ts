import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Worker } from '../../src/worker/worker.js';
import { createTestDatabase, pending, push, startWorker, waitFor, type TestDatabase } from '../helpers/db.js';

const TYPED_INPUTS = '{"f32": ["a", "b"], "f64": "c", "i32": "d", "i64": "e", "flag": "ok", "tag": "tag"}';
const IRIS_INPUTS = '{"X": ["sl", "sw", "pl", "pw"]}';

/**
 * ml._predictions shows each logged prediction as the row_key and outputs a user compares with
 * the table, whatever the key (one integer, composite with text) and outputs (numbers, labels,
 * arrays), equal to what a log built by hand from the table holds.
 */
describe('the prediction log reads back one object per prediction, equal to its row', () => {
  let db: TestDatabase;
  let worker: Worker;

  beforeAll(async () => {
    db = await createTestDatabase();
    await push(db, 'typed', 'typed.onnx');
    await push(db, 'iris', 'iris.onnx');
    worker = await startWorker(db);
  });
  afterAll(async () => {
    await worker?.stop();
    await db?.drop();
  });

  it('an integer key and a float output: each logged prediction equals its row', async () => {
    await db.sql(`CREATE TABLE logged_sums (id int PRIMARY KEY, a real, b real, c double precision, d int, e bigint, ok boolean, tag text)`);
    await db.sql(`SELECT ml.deploy('logged_sums', 'logged_sums', 'typed', $1, '{"total": "total"}')`, [TYPED_INPUTS]);
    await db.sql(`INSERT INTO logged_sums SELECT g, g % 7, g % 11, g / 3.0, g % 13, g * 1000003, g % 2 = 0, 't' FROM generate_series(1, 1500) g`);
    await waitFor(async () => (await pending(db, 'logged_sums')) === 0, 'scored');
    const [check] = await db.sql<{ logged: string; matching: string }>(`
      SELECT count(*) AS logged,
             count(*) FILTER (WHERE p.row_key = jsonb_build_object('id', t.id) AND p.outputs = jsonb_build_object('total', t.total)) AS matching
        FROM ml._predictions p JOIN ml._deployments d ON d.id = p.deployment_id AND d.name = 'logged_sums'
        LEFT JOIN logged_sums t ON t.id = (p.row_key->>'id')::int`);
    expect(check!.logged).toBe('1500');
    expect(check!.matching).toBe('1500');
  });

  it('a composite key with text, a label and an array output: the same objects as a log built by hand', async () => {
    await db.sql(`CREATE TABLE logged_flowers (site text, seq int, sl real, sw real, pl real, pw real, PRIMARY KEY (site, seq))`);
    await db.sql(`SELECT ml.deploy('logged_flowers', 'logged_flowers', 'iris', $1, '{"species": "label", "probs": "probabilities"}')`, [IRIS_INPUTS]);
    await db.sql(`INSERT INTO logged_flowers SELECT CASE WHEN g % 2 = 0 THEN 'north' ELSE 'it''s "south"' END, g,
                    4.5 + (g % 30) / 10.0, 3.0, 1.0 + (g % 50) / 10.0, (g % 25) / 10.0 FROM generate_series(1, 400) g`);
    await waitFor(async () => (await pending(db, 'logged_flowers')) === 0, 'scored');
    // The same predictions logged by hand, an object per row, from the table itself.
    await db.sql(`
      INSERT INTO ml._prediction_batches (deployment_id, row_keys, model, role, outputs)
      SELECT d.id, array_agg(jsonb_build_object('site', t.site, 'seq', t.seq)), 'per-row@1', 'live',
             array_agg(jsonb_build_object('species', t.species, 'probs', t.probs))
        FROM logged_flowers t, ml._deployments d WHERE d.name = 'logged_flowers' GROUP BY d.id`);
    const differ = await db.sql(`
      WITH p AS (SELECT p.model = 'per-row@1' AS per_row, p.row_key, p.outputs FROM ml._predictions p
                   JOIN ml._deployments d ON d.id = p.deployment_id AND d.name = 'logged_flowers')
      (SELECT row_key, outputs FROM p WHERE per_row EXCEPT ALL SELECT row_key, outputs FROM p WHERE NOT per_row)
      UNION ALL
      (SELECT row_key, outputs FROM p WHERE NOT per_row EXCEPT ALL SELECT row_key, outputs FROM p WHERE per_row)`);
    expect(differ).toEqual([]);
    const [n] = await db.sql<{ n: string }>(`SELECT count(*) AS n FROM ml._predictions p JOIN ml._deployments d ON d.id = p.deployment_id AND d.name = 'logged_flowers'`);
    expect(n!.n).toBe('800');
  });
});
