import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Worker } from '../../src/worker/worker.js';
import { createTestDatabase, pending, push, startWorker, waitFor, type TestDatabase } from '../helpers/db.js';

const IRIS_INPUTS = '{"X": ["sepal_length", "sepal_width", "petal_length", "petal_width"]}';
const IRIS_OUTPUTS = '{"species": "label", "p_setosa": "probabilities[0]", "p_virginica": "probabilities[2]"}';

describe('a row inserted with plain SQL is scored and written back', () => {
  let db: TestDatabase;
  let worker: Worker;

  beforeAll(async () => {
    db = await createTestDatabase();
    await push(db, 'iris', 'iris.onnx');
    await db.sql(`CREATE TABLE flowers (
      id bigserial PRIMARY KEY,
      sepal_length real, sepal_width real, petal_length real, petal_width real,
      note text)`);
    await db.sql(`SELECT ml.deploy('flowers', 'flowers', 'iris', inputs => $1, outputs => $2)`, [IRIS_INPUTS, IRIS_OUTPUTS]);
    worker = await startWorker(db);
  });
  afterAll(async () => {
    await worker?.stop();
    await db?.drop();
  });

  const species = async (id: number) =>
    (await db.sql<{ species: string | null }>('SELECT species FROM flowers WHERE id = $1', [id]))[0]?.species;

  it('fills the prediction columns of a single inserted row', async () => {
    const [row] = await db.sql<{ id: string }>(
      'INSERT INTO flowers (sepal_length, sepal_width, petal_length, petal_width) VALUES (5.1, 3.5, 1.4, 0.2) RETURNING id',
    );
    const id = Number(row!.id);
    expect(await waitFor(() => species(id), 'a prediction')).toBe('setosa');
    const [scored] = await db.sql<{ p_setosa: number; p_virginica: number }>('SELECT p_setosa, p_virginica FROM flowers WHERE id = $1', [id]);
    expect(scored!.p_setosa).toBeGreaterThan(0.9);
    expect(scored!.p_virginica).toBeLessThan(0.01);
  });

  it('scores every row of a multi-row INSERT', async () => {
    await db.sql(`INSERT INTO flowers (sepal_length, sepal_width, petal_length, petal_width)
                  SELECT 6.7, 3.0, 5.2, 2.3 FROM generate_series(1, 500)`);
    await waitFor(async () => (await db.sql(`SELECT 1 FROM flowers WHERE species IS NULL`)).length === 0, 'all rows scored');
    const counts = await db.sql<{ species: string; n: string }>(
      "SELECT species, count(*) AS n FROM flowers WHERE sepal_length > 6 GROUP BY species",
    );
    expect(counts).toEqual([{ species: 'virginica', n: '500' }]);
  });

  it('rescores a row when an input column changes', async () => {
    const [row] = await db.sql<{ id: string }>(
      'INSERT INTO flowers (sepal_length, sepal_width, petal_length, petal_width) VALUES (5.1, 3.5, 1.4, 0.2) RETURNING id',
    );
    const id = Number(row!.id);
    await waitFor(async () => (await species(id)) === 'setosa', 'first prediction');
    await db.sql('UPDATE flowers SET sepal_length = 6.7, sepal_width = 3.0, petal_length = 5.2, petal_width = 2.3 WHERE id = $1', [id]);
    expect(await waitFor(async () => (await species(id)) === 'virginica', 'new prediction')).toBe(true);
  });

  it('does not rescore a row when only a non-input column changes', async () => {
    const [row] = await db.sql<{ id: string }>(
      'INSERT INTO flowers (sepal_length, sepal_width, petal_length, petal_width) VALUES (5.1, 3.5, 1.4, 0.2) RETURNING id',
    );
    const id = Number(row!.id);
    await waitFor(async () => (await species(id)) === 'setosa', 'first prediction');
    const batches = async () => Number((await db.sql<{ n: string }>('SELECT coalesce(sum(scored), 0) AS n FROM ml._batches'))[0]!.n);
    const before = await batches();
    // A prediction column set by hand shows whether the worker wrote again.
    await db.sql("UPDATE flowers SET note = 'looked at', species = 'by hand' WHERE id = $1", [id]);
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(await pending(db, 'flowers')).toBe(0);
    expect(await species(id)).toBe('by hand');
    expect(await batches()).toBe(before);
  });

  it('reports the deployment in ml.status', async () => {
    const [status] = await db.sql<Record<string, unknown>>('SELECT * FROM ml.status');
    expect(status).toMatchObject({ deployment: 'flowers', model: 'iris@1', state: 'active', pending: '0', dead_letters: '0' });
    expect(Number(status!.scored_last_minute)).toBeGreaterThanOrEqual(503);
    expect(status!.latency_p50_ms).toBeTypeOf('number');
    expect(status!.latency_p99_ms).toBeTypeOf('number');
  });

  it('ml.backfill queues existing rows, all or those matching a filter, and they are scored again', async () => {
    // Clear predictions behind pgscore's back (the worker's own setting skips the triggers).
    await db.sql(`BEGIN; SET LOCAL pgscore.writeback = 'on'; UPDATE flowers SET species = NULL WHERE sepal_length > 6; COMMIT;`);
    const [expected] = await db.sql<{ n: string }>(`SELECT count(*) AS n FROM flowers WHERE sepal_length > 6`);
    const [queued] = await db.sql<{ n: string }>(`SELECT ml.backfill('flowers', 'sepal_length > 6') AS n`);
    expect(queued!.n).toBe(expected!.n);
    await waitFor(async () => (await db.sql(`SELECT 1 FROM flowers WHERE species IS NULL`)).length === 0, 'backfilled rows scored');
    await expect(db.sql(`SELECT ml.backfill('flowers', 'nope > 1')`)).rejects.toThrow(
      'backfill filter "nope > 1" is not a valid condition on public.flowers: column "nope" does not exist',
    );
    await expect(db.sql(`SELECT ml.backfill('nothing')`)).rejects.toThrow('deployment "nothing" does not exist');
  });

  it('scores rows that were queued while no worker ran', async () => {
    await worker.stop();
    await db.sql(`INSERT INTO flowers (sepal_length, sepal_width, petal_length, petal_width) VALUES (5.0, 3.4, 1.5, 0.2)`);
    expect(await pending(db, 'flowers')).toBe(1);
    worker = await startWorker(db);
    await waitFor(async () => (await db.sql(`SELECT 1 FROM flowers WHERE species IS NULL`)).length === 0, 'queued row scored');
  });
});
