import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Worker } from '../../src/worker/worker.js';
import { createTestDatabase, modelBytes, pending, push, startWorker, waitFor, type TestDatabase } from '../helpers/db.js';
import { registerSums, SUMS_INPUTS, SUMS_OUTPUTS } from '../helpers/sums.js';
import { pushModel } from '../../src/models/registry.js';

interface DriftRow {
  deployment: string;
  model: string;
  kind: string;
  feature: string;
  rows: string;
  psi: number;
  drifted: boolean;
}

const IRIS_INPUTS = '{"X": ["sl", "sw", "pl", "pw"]}';
const U = (g: string, salt: string) => `((hashtext((${g})::text || '${salt}')::bigint & 65535) / 65536.0)`;
const FLOWER = (g: string, shift = '0') =>
  `4.3 + 3.6 * ${U(g, 'a')}, 2.0 + 2.4 * ${U(g, 'b')}, 1.0 + 5.9 * ${U(g, 'c')} + ${shift}, 0.1 + 2.4 * ${U(g, 'd')}`;

describe('drift with two workers, and the rows drifted needs', () => {
  let db: TestDatabase;

  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(async () => {
    await db?.drop();
  });

  const drift = () => db.sql<DriftRow>(`SELECT deployment, model, kind, feature, rows, psi, drifted FROM ml.drift
                                          WHERE "window" = '1 hour' ORDER BY deployment, kind, feature`);

  it('two workers on unchanged traffic, with no baseline set, bin by the one stored baseline: PSI near 0, nothing drifted', async () => {
    // Three versions (each its own first-rows baseline) whose output is 0 or 1: sums of zeros and
    // a flag that is true for about 30 % of the rows. A 0/1 output is where two workers' own
    // summaries disagreed (the share of zeros falls either side of a decile): PSI 6.81, drifted.
    await registerSums(db);
    await pushModel(db.pool, 'sums', await modelBytes('typed.onnx'));
    await db.sql(`SELECT ml.configure('baseline_rows', '400')`);
    const deployments = ['sums@1', 'sums@2', 'sums@3'].map((model, i) => ({ model, name: `zeros${i + 1}` }));
    for (const { model, name } of deployments) {
      await db.sql(`CREATE TABLE ${name} (id int PRIMARY KEY, a real, b real, c float8, d int, e bigint, ok bool, tag text)`);
      await db.sql(`SELECT ml.deploy($1::text, $1::regclass, $2, $3, $4)`, [name, model, SUMS_INPUTS, SUMS_OUTPUTS]);
    }
    const workers: Worker[] = [await startWorker(db, { batchSize: 40 }), await startWorker(db, { batchSize: 40 })];
    const batches = [0, 0];
    workers.forEach((w, i) => w.on('batch', () => (batches[i]! += 1)));
    try {
      for (let from = 1; from <= 4000; from += 50) {
        for (const { name } of deployments) {
          await db.sql(`INSERT INTO ${name} SELECT g, 0, 0, 0, 0, 0, random() < 0.3, 't' FROM generate_series($1::int, $1::int + 49) g`, [from]);
        }
      }
      for (const { name } of deployments) {
        await waitFor(async () => (await pending(db, name)) === 0 && (await db.sql(`SELECT 1 FROM ${name} WHERE total IS NULL LIMIT 1`)).length === 0, `${name} scored`);
      }
    } finally {
      // Stopping writes each worker's last counts.
      await Promise.all(workers.map((w) => w.stop()));
    }
    expect(batches.every((n) => n > 0), `batches per worker: ${batches.join(', ')}`).toBe(true);
    expect(await db.sql(`SELECT version, origin, rows FROM ml._baselines ORDER BY version`)).toEqual([1, 2, 3].map((version) => ({
      version, origin: 'first_rows', rows: '400',
    })));
    const rows = await drift();
    const outputs = rows.filter((r) => r.kind === 'output');
    console.log(`PSI of the 0/1 output per version: ${outputs.map((r) => `${r.model} ${r.psi.toFixed(4)} over ${r.rows} rows`).join('; ')}`);
    expect(outputs.map((r) => r.model)).toEqual(['sums@1', 'sums@2', 'sums@3']);
    for (const row of rows) {
      expect(row.drifted, `${row.deployment} ${row.kind} ${row.feature}: PSI ${row.psi}`).toBe(false);
      expect(row.psi, `${row.deployment} ${row.kind} ${row.feature}`).toBeLessThan(0.05);
    }
  }, 300_000);

  it('flags a feature drifted only over drift_min_rows rows (default 500): a few shifted rows are not enough', async () => {
    await push(db, 'iris', 'iris.onnx');
    await db.sql(`CREATE TABLE training (sl real, sw real, pl real, pw real)`);
    await db.sql(`INSERT INTO training SELECT ${FLOWER('g')} FROM generate_series(1, 2000) g`);
    await db.sql(`SELECT ml.set_baseline('iris', 'SELECT sl, sw, pl, pw FROM training')`);
    await db.sql(`CREATE TABLE few (id int PRIMARY KEY, sl real, sw real, pl real, pw real)`);
    await db.sql(`SELECT ml.deploy('few', 'few', 'iris', $1, '{"species": "label"}')`, [IRIS_INPUTS]);
    const worker = await startWorker(db);
    try {
      // Petal length 10 cm longer than anything in training: one bucket, far from the baseline.
      await db.sql(`INSERT INTO few SELECT g, ${FLOWER('g + 9000', '10')} FROM generate_series(1, 5) g`);
      await waitFor(async () => (await pending(db, 'few')) === 0, 'scored');
    } finally {
      await worker.stop();
    }
    const petal = async () => (await drift()).find((r) => r.deployment === 'few' && r.feature === 'X[2]')!;
    expect(await db.sql(`SELECT value, "default" FROM ml.settings WHERE name = 'drift_min_rows'`)).toEqual([{ value: '500', default: '500' }]);
    expect(await petal()).toMatchObject({ rows: '5', drifted: false });
    expect((await petal()).psi).toBeGreaterThan(5);

    await db.sql(`SELECT ml.configure('drift_min_rows', '5')`);
    expect(await petal()).toMatchObject({ rows: '5', drifted: true });
    await expect(db.sql(`SELECT ml.configure('drift_min_rows', '0')`)).rejects.toThrow("drift_min_rows must be a whole number of at least 1, not '0'");
  });
});
