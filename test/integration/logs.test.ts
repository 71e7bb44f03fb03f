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
