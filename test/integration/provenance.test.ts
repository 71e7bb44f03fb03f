import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Worker } from '../../src/worker/worker.js';
import { createTestDatabase, pending, startWorker, waitFor, type TestDatabase } from '../helpers/db.js';
import { createSumsTable, insertSums, registerSums, SUMS_INPUTS as INPUTS, V1, V2 } from '../helpers/sums.js';

/** Every prediction records the version that wrote it, and when. */
describe('provenance', () => {
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

  it('names the version that actually scored each row, through a promotion mid-traffic', async () => {
    await table('sums');
    await db.sql(`SELECT ml.deploy('sums', 'sums', 'sums', $1, '{"total": "total"}')`, [INPUTS]);
    // Traffic goes on until the promotion has taken effect (a fixed 4,000 rows were sometimes all
    // scored by version 1 before the worker had reloaded), and 20 batches more.
    let promoted = false;
    let inserted = 0;
    const writer = (async () => {
      for (let after = 0; after < 20 && inserted < 100_000; ) {
        await insert('sums', inserted + 1, inserted + 100);
        inserted += 100;
        if (promoted || (promoted = (await db.sql(`SELECT 1 FROM sums WHERE sums_model = 'sums@2' LIMIT 1`)).length === 1)) after += 1;
      }
    })();
    await waitFor(async () => (await db.sql(`SELECT 1 FROM sums WHERE total IS NOT NULL LIMIT 1`)).length === 1, 'first predictions');
    await db.sql(`SELECT ml.promote('sums', 2)`);
    await writer;
    await waitFor(async () => (await pending(db, 'sums')) === 0 && (await db.sql(`SELECT 1 FROM sums WHERE total IS NULL`)).length === 0, 'all scored');
    const rollout = await db.sql<{ model: string; rows: string; consistent: string }>(`
      SELECT sums_model AS model, count(*) AS rows,
             count(*) FILTER (WHERE total = CASE sums_model WHEN 'sums@1' THEN ${V1} WHEN 'sums@2' THEN ${V2} END) AS consistent
        FROM sums GROUP BY 1 ORDER BY 1`);
    // Both versions scored part of the traffic; every prediction is the one its named version gives.
    expect(rollout.map((r) => r.model)).toEqual(['sums@1', 'sums@2']);
    for (const r of rollout) expect(r.consistent).toBe(r.rows);
    expect(rollout.reduce((n, r) => n + Number(r.rows), 0)).toBe(inserted);
    // ml.status shows both versions that wrote predictions in the last hour, most rows first.
    const [status] = await db.sql<{ model: string; versions_in_use: string[] }>(`SELECT model, versions_in_use FROM ml.status WHERE deployment = 'sums'`);
    expect(status!.model).toBe('sums@2');
    expect([...status!.versions_in_use].sort()).toEqual(['sums@1', 'sums@2']);
    const [times] = await db.sql<{ missing: string; future: string }>(`
      SELECT count(*) FILTER (WHERE sums_scored_at IS NULL) AS missing, count(*) FILTER (WHERE sums_scored_at > now()) AS future FROM sums`);
    expect(times).toEqual({ missing: '0', future: '0' });
  });

  it('can be turned off, and refuses a column of the wrong type', async () => {
    await table('plain');
    await db.sql(`SELECT ml.deploy('plain', 'plain', 'sums', $1, '{"total": "total"}', '{"provenance": false}')`, [INPUTS]);
    const columns = await db.sql<{ attname: string }>(
      `SELECT attname FROM pg_attribute WHERE attrelid = 'plain'::regclass AND attname LIKE 'plain_%' AND NOT attisdropped`);
    expect(columns).toEqual([]);
    await insert('plain', 1, 10);
    await waitFor(async () => (await db.sql(`SELECT 1 FROM plain WHERE total IS NULL`)).length === 0, 'scored without provenance');

    await table('clash');
    await db.sql(`ALTER TABLE clash ADD COLUMN clash_model int`);
    await expect(db.sql(`SELECT ml.deploy('clash', 'clash', 'sums', $1, '{"total": "total"}')`, [INPUTS])).rejects.toThrow(
      'column "clash_model" of public.clash is integer, but the deployment records the model version that wrote each prediction there (text)');
    await expect(db.sql(`SELECT ml.deploy('clash', 'clash', 'sums', $1, '{"total": "total"}', '{"provenance": "yes"}')`, [INPUTS])).rejects.toThrow(
      'option "provenance" must be true or false');
  });
});
