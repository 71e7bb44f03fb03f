import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { exited, startPgscore } from '../helpers/cli.js';
import { createTestDatabase, pending, push, startWorker, waitFor, type TestDatabase } from '../helpers/db.js';

const GBM_FEATURES = Array.from({ length: 30 }, (_, i) => `f${i}`);

async function createTumors(db: TestDatabase, table: string): Promise<void> {
  await db.sql(`CREATE TABLE ${table} (id bigint PRIMARY KEY, ${GBM_FEATURES.map((f) => `${f} real`).join(', ')})`);
  await db.sql(`SELECT ml.deploy($1, $2, 'gbm', $3, '{"p_malignant": "probabilities[0]"}')`, [
    table,
    table,
    JSON.stringify({ X: GBM_FEATURES }),
  ]);
}

const insertTumors = (table: string, from: number, to: number) =>
  `INSERT INTO ${table} SELECT g, ${GBM_FEATURES.map((_, i) => `(g % ${i + 7})::real`).join(', ')} FROM generate_series(${from}, ${to}) g`;

const unscored = async (db: TestDatabase, table: string) =>
  Number((await db.sql<{ n: string }>(`SELECT count(*) AS n FROM ${table} WHERE p_malignant IS NULL`))[0]!.n);

describe('nothing is lost, nothing is scored twice, newest wins', () => {
  let db: TestDatabase;

  beforeAll(async () => {
    db = await createTestDatabase();
    await push(db, 'gbm', 'breast_cancer_gbm.onnx');
    await push(db, 'typed', 'typed.onnx');
  });
  afterAll(async () => {
    await db?.drop();
  });

  it('two workers share a queue: every row scored exactly once', async () => {
    await createTumors(db, 'shared');
    const workers = await Promise.all([startWorker(db, { batchSize: 500 }), startWorker(db, { batchSize: 500 })]);
    const batchesBy = [0, 0];
    workers.forEach((worker, i) => worker.on('batch', (b) => (batchesBy[i]! += b.written)));
    try {
      await Promise.all(Array.from({ length: 20 }, (_, i) => db.sql(insertTumors('shared', i * 1000 + 1, (i + 1) * 1000))));
      await waitFor(async () => (await unscored(db, 'shared')) === 0, 'all 20,000 rows scored');
    } finally {
      await Promise.all(workers.map((w) => w.stop()));
    }
    const [stats] = await db.sql<{ scored: string }>(
      `SELECT sum(scored) AS scored FROM ml._batches b JOIN ml._deployments d ON d.id = b.deployment_id WHERE d.name = 'shared'`);
    expect(stats!.scored).toBe('20000');
    expect(batchesBy[0]! + batchesBy[1]!).toBe(20000);
    expect(batchesBy.every((n) => n > 0)).toBe(true);
  });

  it('a worker killed mid-batch leaves its rows queued; the next worker scores them', async () => {
    await createTumors(db, 'killed');
    await db.sql(insertTumors('killed', 1, 60_000));
    const worker = startPgscore(['worker', '--batch-size', '5000', '--concurrency', '1'], { DATABASE_URL: db.workerUrl });
    await waitFor(async () => (await unscored(db, 'killed')) < 60_000, 'first batch written');
    worker.kill('SIGKILL');
    await exited(worker);
    const left = await unscored(db, 'killed');
    expect(left).toBeGreaterThan(0);
    // Every row without a prediction is still queued: the killed batch rolled back.
    expect(await pending(db, 'killed')).toBe(left);

    const restarted = await startWorker(db);
    try {
      await waitFor(async () => (await unscored(db, 'killed')) === 0, 'the rest scored after restart');
    } finally {
      await restarted.stop();
    }
    expect(await pending(db, 'killed')).toBe(0);
  });

  it('a 100,000-row INSERT is scored completely', async () => {
    await createTumors(db, 'bulk');
    const worker = await startWorker(db);
    try {
      const started = performance.now();
      await db.sql(insertTumors('bulk', 1, 100_000));
      const inserted = performance.now();
      await waitFor(async () => (await unscored(db, 'bulk')) === 0, '100,000 rows scored', 120_000);
      const done = performance.now();
      console.log(
        `100k-row INSERT: statement ${(inserted - started).toFixed(0)} ms, scored ${(done - started).toFixed(0)} ms after it started ` +
          `(${Math.round(100_000 / ((done - started) / 1000))} rows/s end to end, 100-tree GBM)`,
      );
    } finally {
      await worker.stop();
    }
  });

  it('a row updated 50 times in quick succession ends with the prediction for its last values', async () => {
    await db.sql(`CREATE TABLE churn (id int PRIMARY KEY, a real, b real, c float8, d int, e bigint, ok bool, tag text)`);
    await db.sql(`SELECT ml.deploy('churn', 'churn', 'typed',
      '{"f32": ["a", "b"], "f64": "c", "i32": "d", "i64": "e", "flag": "ok", "tag": "tag"}', '{"total": "total"}')`);
    await db.sql(`INSERT INTO churn SELECT g, 0, 0, 0, 0, 0, false, 't' FROM generate_series(1, 20) g`);
    const workers = await Promise.all([startWorker(db, { batchSize: 5 }), startWorker(db, { batchSize: 5 })]);
    try {
      for (let v = 1; v <= 50; v++) await db.sql(`UPDATE churn SET c = $1`, [v]);
      await waitFor(async () => (await pending(db, 'churn')) === 0, 'queue drained');
      await waitFor(async () => {
        const rows = await db.sql<{ total: number }>(`SELECT total FROM churn`);
        return rows.length === 20 && rows.every((row) => row.total === 50);
      }, 'newest predictions');
    } finally {
      await Promise.all(workers.map((w) => w.stop()));
    }
  });

  it('a lost listener connection is re-established and the queue swept', async () => {
    await db.sql(`CREATE TABLE pings (id int PRIMARY KEY, a real, b real, c float8, d int, e bigint, ok bool, tag text)`);
    await db.sql(`SELECT ml.deploy('pings', 'pings', 'typed',
      '{"f32": ["a", "b"], "f64": "c", "i32": "d", "i64": "e", "flag": "ok", "tag": "tag"}', '{"total": "total"}')`);
    // With a one-minute poll, only a NOTIFY or the reconnect sweep can score the row in time.
    const worker = await startWorker(db, { pollIntervalMs: 60_000 });
    try {
      await db.sql(`INSERT INTO pings VALUES (1, 1, 1, 1, 1, 1, true, 't')`);
      await waitFor(async () => (await db.sql(`SELECT 1 FROM pings WHERE total = 6`)).length === 1, 'scored via NOTIFY');
      await db.sql(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                     WHERE application_name = 'pgscore listener' AND datname = current_database()`);
      await db.sql(`INSERT INTO pings VALUES (2, 1, 1, 1, 1, 1, true, 't')`);
      await waitFor(async () => (await db.sql(`SELECT 1 FROM pings WHERE total = 6`)).length === 2, 'scored after reconnect', 20_000);
    } finally {
      await worker.stop();
    }
  });
});
