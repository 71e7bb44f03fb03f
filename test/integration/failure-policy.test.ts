import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BatchFailure } from '../../src/worker/loop.js';
import type { Worker } from '../../src/worker/worker.js';
import { createTestDatabase, pending, push, startWorker, waitFor, type TestDatabase } from '../helpers/db.js';

const INPUTS = '{"f32": ["a", "b"], "f64": "c", "i32": "d", "i64": "e", "flag": "ok", "tag": "tag"}';

/**
 * The failure policy (src/pipeline/policy.ts), notify transport; kafka.test.ts runs the same
 * case through the relay and a Kafka worker. A deployment whose model stops loading is paused:
 * its rows stay queued (no dead letters), the other deployments go on, and a promotion resumes it.
 */
describe('one failure policy, notify transport', () => {
  let db: TestDatabase;
  let worker: Worker;
  const failures: BatchFailure[] = [];

  beforeAll(async () => {
    db = await createTestDatabase();
    await push(db, 'fragile', 'typed.onnx');
    await push(db, 'typed', 'typed.onnx');
    worker = await startWorker(db);
    worker.on('failure', (failure) => failures.push(failure));
  });
  afterAll(async () => {
    await worker?.stop();
    await db?.drop();
  });

  it('a model that stops loading pauses its deployment; its rows wait; a promotion resumes it', async () => {
    // The bytes go bad after the signature was recorded (what another onnxruntime build would
    // see), before any worker loaded them.
    await db.sql(`UPDATE ml._models SET onnx = '\\x00010203' WHERE name = 'fragile' AND version = 1`);
    for (const [table, model] of [['paused', 'fragile'], ['healthy', 'typed']]) {
      await db.sql(`CREATE TABLE ${table} (id int PRIMARY KEY, a real, b real, c float8, d int, e bigint, ok bool, tag text)`);
      await db.sql(`SELECT ml.deploy($1::text, $1::regclass, $2, $3, '{"total": "total"}')`, [table, model, INPUTS]);
    }
    const insert = (table: string) => db.sql(`INSERT INTO ${table} SELECT g, 1, 2, 3, 4, g, true, 't' FROM generate_series(1, 300) g`);
    await insert('paused');
    await insert('healthy');
    await waitFor(async () => (await db.sql(`SELECT 1 FROM healthy WHERE total IS NULL`)).length === 0, 'the healthy deployment scored');
    await waitFor(async () => failures.some((f) => f.deployment === 'paused' && f.kind === 'pause'), 'the deployment paused');
    expect(await pending(db, 'paused')).toBe(300);
    expect(await db.sql(`SELECT count(*) AS n FROM ml.errors`)).toEqual([{ n: '0' }]);
    // Paused means resting with a growing delay, not retrying in a loop.
    const before = failures.length;
    await new Promise((resolve) => setTimeout(resolve, 1500));
    expect(failures.length - before).toBeLessThanOrEqual(3);

    await push(db, 'fragile', 'typed.onnx');
    await db.sql(`SELECT ml.promote('fragile', 2)`);
    await waitFor(async () => (await pending(db, 'paused')) === 0, 'resumed after the promotion');
    expect(await db.sql(`SELECT count(*) AS n FROM paused WHERE total = a + b + c + d + e + ok::int`)).toEqual([{ n: '300' }]);
  });
});
