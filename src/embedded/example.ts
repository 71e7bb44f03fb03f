import { readFile } from 'node:fs/promises';
import type pg from 'pg';
import { pushModel } from '../models/registry.js';

export const EXAMPLE_MODEL_FILE = new URL('../../examples/models/iris.onnx', import.meta.url);

/**
 * The example `pgscore up` sets up once: the iris model (examples/train.py), a table for
 * flower measurements, and a deployment that writes the predicted species and its probabilities.
 */
export async function ensureExample(db: pg.Pool): Promise<void> {
  const { rowCount: registered } = await db.query("SELECT 1 FROM ml._models WHERE name = 'iris'");
  if (!registered) {
    await pushModel(db, 'iris', await readFile(EXAMPLE_MODEL_FILE), {
      metadata: { source: 'examples/train.py', dataset: 'sklearn.datasets.load_iris' },
    });
  }
  await db.query(`
    CREATE TABLE IF NOT EXISTS public.iris (
      id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
      sepal_length real NOT NULL,
      sepal_width  real NOT NULL,
      petal_length real NOT NULL,
      petal_width  real NOT NULL,
      created_at   timestamptz NOT NULL DEFAULT now())`);
  const { rowCount: deployed } = await db.query("SELECT 1 FROM ml._deployments WHERE name = 'iris_species'");
  if (!deployed) {
    await db.query(`
      SELECT ml.deploy('iris_species', 'public.iris', 'iris',
        inputs  => '{"X": ["sepal_length", "sepal_width", "petal_length", "petal_width"]}',
        outputs => '{"species": "label", "p_setosa": "probabilities[0]",
                     "p_versicolor": "probabilities[1]", "p_virginica": "probabilities[2]"}')`);
  }
}
