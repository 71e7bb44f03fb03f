import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { exited, startPgscore } from '../helpers/cli.js';
import { createTestDatabase, push, waitFor, type TestDatabase } from '../helpers/db.js';

const FEATURES = Array.from({ length: 30 }, (_, i) => `f${i}`);

/**
 * onnxruntime's own messages: its native log (coloured lines straight to stderr) is silenced,
 * and its errors reach the structured log, rate-limited. examples/models/fails_at_run.onnx
 * loads and fails on every run; breast_cancer_gbm.onnx is the LightGBM-style tree export.
 */
describe("the worker's stderr is JSON lines, also when onnxruntime fails", () => {
  let db: TestDatabase;

  beforeAll(async () => {
    db = await createTestDatabase();
    await push(db, 'fails', 'fails_at_run.onnx');
    await push(db, 'gbm', 'breast_cancer_gbm.onnx');
    for (const [table, model, outputs] of [['failing', 'fails', '{"s": "scores[1]"}'], ['trees', 'gbm', '{"p": "probabilities[1]"}']] as const) {
      await db.sql(`CREATE TABLE ${table} (id int PRIMARY KEY, ${FEATURES.map((f) => `${f} real`).join(', ')})`);
      await db.sql(`SELECT ml.deploy($1::text, $1::regclass, $2, $3, $4)`, [table, model, JSON.stringify({ X: FEATURES }), outputs]);
    }
  });
  afterAll(async () => {
    await db?.drop();
  });

  it('a model failing on 2,000 rows leaves them as dead letters and a few JSON log lines', async () => {
    const worker = startPgscore(['worker'], { DATABASE_URL: db.workerUrl, PGSCORE_LOG_LEVEL: 'info' });
    try {
      await waitFor(async () => worker.output().includes('worker ready'), 'worker ready');
      const rows = (table: string) =>
        db.sql(`INSERT INTO ${table} SELECT g, ${FEATURES.map((_, i) => `(g % ${i + 3})::real`).join(', ')} FROM generate_series(1, 2000) g`);
      await rows('failing');
      await rows('trees');
      await waitFor(async () => {
        const [dead] = await db.sql<{ n: string }>(`SELECT count(*) AS n FROM ml.errors WHERE deployment = 'failing'`);
        const [scored] = await db.sql<{ n: string }>(`SELECT count(p) AS n FROM trees`);
        return dead!.n === '2000' && scored!.n === '2000';
      }, 'dead letters and scores');
      const [reason] = await db.sql<{ reason: string }>(`SELECT reason FROM ml.errors WHERE deployment = 'failing' LIMIT 1`);
      expect(reason!.reason).toMatch(/^model fails@1 failed on this row: Non-zero status code returned while running Reshape node/);
    } finally {
      worker.kill('SIGTERM');
    }
    expect(await exited(worker)).toBe(0);
    const lines = worker.output().trim().split('\n');
    for (const line of lines) expect(() => JSON.parse(line), line).not.toThrow();
    const dead = lines.filter((line) => line.includes('became dead letters'));
    expect(dead.length).toBeGreaterThanOrEqual(1);
    expect(dead.length).toBeLessThanOrEqual(3);
    expect(lines.length).toBeLessThan(20);
  });
});

/**
 * ml.undeploy while the worker drains the deployment's queue: the queue table and the enqueue
 * function go while a batch may be about to use them. That is the deployment being gone, not a
 * failure: no error-level line, no stack, no pg client object.
 */
describe('undeploying while the worker runs', () => {
  let db: TestDatabase;

  beforeAll(async () => {
    db = await createTestDatabase();
    await push(db, 'iris', 'iris.onnx');
  });
  afterAll(async () => {
    await db?.drop();
  });

  it('logs no error-level line and no stack trace', async () => {
    const iris = (table: string) =>
      db.sql(`SELECT ml.deploy($1::text, $1::regclass, 'iris', '{"X": ["sl", "sw", "pl", "pw"]}', '{"species": "label"}')`, [table]);
    for (const table of ['busy', 'calm']) await db.sql(`CREATE TABLE ${table} (id int PRIMARY KEY, sl real, sw real, pl real, pw real, species text)`);
    await iris('busy');
    await iris('calm');
    const worker = startPgscore(['worker', '--batch-size', '20', '--concurrency', '2'], { DATABASE_URL: db.workerUrl, PGSCORE_LOG_LEVEL: 'info' });
    try {
      await waitFor(async () => worker.output().includes('worker ready') || worker.exitCode !== null, 'worker ready');
      await db.sql(`INSERT INTO busy SELECT g, g % 7 + 1, 3.5, 1.4, 0.2 FROM generate_series(1, 20000) g`);
      await waitFor(async () => Number((await db.sql<{ n: string }>(`SELECT count(species) AS n FROM busy`))[0]!.n) >= 200, 'the worker busy on busy');
      // ml.undeploy takes its tables before the deployment row: it never deadlocks with a batch.
      await db.sql(`SELECT ml.undeploy('busy')`);
      const [left] = await db.sql<{ n: string }>(`SELECT count(*) - count(species) AS n FROM busy`);
      expect(Number(left!.n)).toBeGreaterThan(0);
      // The worker goes on with the other deployment: it has seen the undeploy and survived it.
      await db.sql(`INSERT INTO calm VALUES (1, 5.1, 3.5, 1.4, 0.2)`);
      await waitFor(async () => (await db.sql<{ species: string | null }>(`SELECT species FROM calm`))[0]?.species, 'calm scored');
    } finally {
      worker.kill('SIGTERM');
    }
    expect(await exited(worker)).toBe(0);
    const lines = worker.output().trim().split('\n').map((line) => JSON.parse(line) as { level: number; msg: string });
    expect(lines.filter((line) => line.level >= 50), worker.output()).toEqual([]);
    expect(worker.output()).not.toMatch(/"stack"|_prepared|"client"/);
  });
});
