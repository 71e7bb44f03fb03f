import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, modelBytes, push, startWorker, waitFor, type TestDatabase } from '../helpers/db.js';

const IRIS_INPUTS = '{"X": ["sl", "sw", "pl", "pw"]}';

describe('ml.deploy checks the mapping against the model signature', () => {
  let db: TestDatabase;

  beforeAll(async () => {
    db = await createTestDatabase();
    await push(db, 'iris', 'iris.onnx');
    await push(db, 'zipmap', 'iris_zipmap.onnx');
    await push(db, 'typed', 'typed.onnx');
    await db.sql(`CREATE TABLE flowers (id int PRIMARY KEY, sl real, sw real, pl real, pw real, name text, species int,
                                        features real[], "X" real[], p_rounded numeric(4, 2), p_wide double precision)`);
    await db.sql(`CREATE TABLE nokey (sl real, sw real, pl real, pw real)`);
  });
  afterAll(async () => {
    await db?.drop();
  });

  const deployError = async (args: string, values: unknown[] = []) => {
    try {
      await db.sql(`SELECT ml.deploy(${args})`, values);
    } catch (error) {
      return (error as Error).message;
    }
    throw new Error('ml.deploy succeeded');
  };

  it.each([
    ["'d', 'nokey', 'iris', $1", [IRIS_INPUTS], 'table public.nokey has no primary key'],
    ["'d', 'flowers', 'nope'", [], 'model "nope" is not registered'],
    ["'d', 'flowers', 'iris@7'", [], 'model iris@7 does not exist (versions: 1)'],
    ["'d', 'flowers', 'iris@staging'", [], 'model iris has no alias "staging"'],
    ["'d d', 'flowers', 'iris'", [], "deployment name 'd d' is not valid"],
    ["'d', 'flowers', 'iris', $1, NULL, '{\"variants\": {}}'", [IRIS_INPUTS], 'option "variants" must name between 1 and 10 model versions'],
    ["'d', 'flowers', 'typed'", [], 'model input "f32" of typed@1 has no column of the same name in public.flowers'],
    ["'d', 'flowers', 'iris', '{\"Y\": \"sl\"}'", [], 'inputs maps "Y", but model iris@1 has no input of that name (its inputs: X float32[null, 4])'],
    ["'d', 'flowers', 'iris', '{\"X\": [\"sl\", \"sw\", \"pl\"]}'", [],
      'model input "X" of iris@1 takes 4 values per row (shape [null, 4]), but inputs maps 3 (column "sl", column "sw", column "pl")'],
    ["'d', 'flowers', 'iris', '{\"X\": [\"sl\", \"sw\", \"pl\", \"name\"]}'", [], 'column "name" is text, but model input "X" of iris@1 needs float32 values'],
    ["'d', 'flowers', 'iris', '{\"X\": [\"sl\", \"sw\", \"pl\", \"nope\"]}'", [],
      'model input "X": "nope" is neither a column of public.flowers nor an SQL expression over it (column "nope" does not exist)'],
    ["'d', 'flowers', 'iris', $1, '{\"p\": \"probabilities[3]\"}'", [IRIS_INPUTS],
      'outputs maps column "p" to "probabilities[3]", but output "probabilities" of model iris@1 has 3 value(s) per row (shape [null, 3])'],
    ["'d', 'flowers', 'iris', $1, '{\"p\": \"score\"}'", [IRIS_INPUTS],
      'outputs maps column "p" to "score", but model iris@1 has no output "score" (its tensor outputs: label string[null], probabilities float32[null, 3])'],
    ["'d', 'flowers', 'iris', $1, '{\"species\": \"label\"}'", [IRIS_INPUTS],
      'column "species" of public.flowers is integer, but output "label" of model iris@1 gives string (one value per row)'],
    ["'d', 'flowers', 'iris', $1, '{\"species\": \"probabilities[0]\"}'", [IRIS_INPUTS],
      'column "species" of public.flowers is integer, but output "probabilities[0]" of model iris@1 gives float32 (one value per row); writing it into integer would round, truncate or overflow'],
    ["'d', 'flowers', 'iris', $1, '{\"p_rounded\": \"probabilities[0]\"}'", [IRIS_INPUTS],
      'column "p_rounded" of public.flowers is numeric(4,2), but output "probabilities[0]" of model iris@1 gives float32 (one value per row); writing it into numeric(4,2) would round, truncate or overflow'],
    ["'d', 'flowers', 'iris', '{\"X\": [\"sl\", \"sw\", \"pl\", \"pw * 2; DROP TABLE nokey\"]}'", [],
      'model input "X": expression (pw * 2; DROP TABLE nokey) is refused: it contains ";"'],
    ["'d', 'flowers', 'iris', '{\"X\": [\"sl\", \"sw\", \"pl\", \"pw * random()\"]}'", [],
      'model input "X": expression (pw * random()) is refused: random() is volatile; an expression may call only immutable or stable functions'],
    ["'d', 'flowers', 'iris', $1, '{\"sl\": \"probabilities[0]\"}'", [IRIS_INPUTS],
      'column "sl" is a primary key or input column of public.flowers, so it cannot hold predictions'],
    ["'d', 'flowers', 'zipmap', $1, '{\"p\": \"output_probability\"}'", [IRIS_INPUTS],
      "output \"output_probability\" of model zipmap@1 is not a tensor (skl2onnx's ZipMap returns a sequence of maps), and onnxruntime-node cannot return it"],
  ])('refuses ml.deploy(%s)', async (args, values, message) => {
    expect(await deployError(args, values)).toBe(message);
    expect(await db.sql('SELECT * FROM ml.deployments')).toEqual([]);
  });

  it('maps model inputs to columns of the same name when inputs is omitted', async () => {
    await db.sql(`SELECT ml.deploy('by_name', 'flowers', 'iris', outputs => '{"p_by_name": "probabilities[0]"}')`);
    const [row] = await db.sql<{ status: string; plan: { inputs: { sources: { column: string }[] }[] } }>(
      `SELECT status, plan FROM ml.deployments WHERE deployment = 'by_name'`);
    expect(row!.status).toBe('active');
    expect(row!.plan.inputs[0]!.sources).toMatchObject([{ column: 'X' }]);
    await db.sql(`SELECT ml.undeploy('by_name')`);
  });

  it('writes a float output into an existing column that holds it exactly (double precision)', async () => {
    await db.sql(`SELECT ml.deploy('wide', 'flowers', 'iris', $1, '{"p_wide": "probabilities[0]"}')`, [IRIS_INPUTS]);
    const [row] = await db.sql<{ status: string }>(`SELECT status FROM ml.deployments WHERE deployment = 'wide'`);
    expect(row!.status).toBe('active');
    await db.sql(`SELECT ml.undeploy('wide')`);
  });

  it('refuses a second deployment of the same name', async () => {
    await db.sql(`SELECT ml.deploy('once', 'flowers', 'iris', $1, '{"p_once": "probabilities[0]"}')`, [IRIS_INPUTS]);
    expect(await deployError(`'once', 'flowers', 'iris', $1`, [IRIS_INPUTS])).toBe('deployment "once" already exists');
    await db.sql(`SELECT ml.undeploy('once')`);
  });

  it('serves the tensor outputs of a ZipMap model', async () => {
    await db.sql(`SELECT ml.deploy('zip', 'flowers', 'zipmap', $1, '{"zip_label": "output_label"}')`, [IRIS_INPUTS]);
    const worker = await startWorker(db);
    try {
      await db.sql(`INSERT INTO flowers (id, sl, sw, pl, pw) VALUES (1, 5.1, 3.5, 1.4, 0.2)`);
      await waitFor(async () => (await db.sql<{ zip_label: string }>('SELECT zip_label FROM flowers WHERE id = 1'))[0]?.zip_label === 'setosa', 'zipmap label');
    } finally {
      await worker.stop();
      await db.sql(`SELECT ml.undeploy('zip')`);
    }
  });

  it('ml.undeploy removes triggers and queue and keeps the predictions', async () => {
    await db.sql(`SELECT ml.deploy('gone', 'flowers', 'iris', $1, '{"p_gone": "probabilities[0]"}')`, [IRIS_INPUTS]);
    await db.sql(`SELECT ml.undeploy('gone')`);
    const triggers = await db.sql(`SELECT tgname FROM pg_trigger WHERE tgrelid = 'flowers'::regclass AND NOT tgisinternal`);
    expect(triggers).toEqual([]);
    const queues = await db.sql(`SELECT relname FROM pg_class WHERE relname LIKE '\\_queue\\_%'`);
    expect(queues).toEqual([]);
    const columns = await db.sql(`SELECT 1 FROM information_schema.columns WHERE table_name = 'flowers' AND column_name = 'p_gone'`);
    expect(columns).toHaveLength(1);
    await expect(db.sql(`SELECT ml.undeploy('gone')`)).rejects.toThrow('deployment "gone" does not exist');
  });
});

describe('models registered with plain SQL', () => {
  let db: TestDatabase;

  beforeAll(async () => {
    db = await createTestDatabase();
    await db.sql(`CREATE TABLE flowers (id int PRIMARY KEY, sl real, sw real, pl real, pw real)`);
  });
  afterAll(async () => {
    await db?.drop();
  });

  it('deploy is pending until a worker reads the signature, then activates and backfills', async () => {
    await db.sql(`INSERT INTO flowers VALUES (1, 5.1, 3.5, 1.4, 0.2)`);
    const [registered] = await db.sql<{ version: number }>(`SELECT ml.register_model('iris', $1) AS version`, [await modelBytes('iris.onnx')]);
    expect(registered!.version).toBe(1);
    const [deployed] = await db.sql<{ status: string }>(
      `SELECT ml.deploy('flowers', 'flowers', 'iris', $1, '{"species": "label"}') AS status`, [IRIS_INPUTS]);
    expect(deployed!.status).toBe('pending');
    const worker = await startWorker(db);
    try {
      await waitFor(async () => (await db.sql<{ species: string }>('SELECT species FROM flowers'))[0]?.species === 'setosa', 'activated');
      const [model] = await db.sql<{ status: string }>(`SELECT status FROM ml.models WHERE name = 'iris'`);
      expect(model!.status).toBe('ready');
    } finally {
      await worker.stop();
    }
  });

  it('a pending deployment whose mapping does not fit turns invalid with the reason', async () => {
    await db.sql(`SELECT ml.register_model('iris2', $1)`, [await modelBytes('iris.onnx')]);
    await db.sql(`SELECT ml.deploy('bad', 'flowers', 'iris2', '{"X": ["sl"]}', '{"s2": "label"}')`);
    const worker = await startWorker(db);
    try {
      const [row] = await waitFor(
        async () => {
          const rows = await db.sql<{ status: string; reason: string }>(`SELECT status, reason FROM ml.deployments WHERE deployment = 'bad'`);
          return rows[0]?.status === 'invalid' && rows;
        },
        'invalid deployment',
      );
      expect(row!.reason).toBe('model input "X" of iris2@1 takes 4 values per row (shape [null, 4]), but inputs maps 1 (column "sl")');
    } finally {
      await worker.stop();
    }
  });

  it('a model that onnxruntime cannot load is reported in ml.models and other deployments keep working', async () => {
    await db.sql(`SELECT ml.register_model('broken', '\\x00010203'::bytea)`);
    await db.sql(`SELECT ml.deploy('broken', 'flowers', 'broken', '{"X": ["sl", "sw", "pl", "pw"]}', '{"b": "label"}')`);
    const worker = await startWorker(db);
    try {
      const [model] = await waitFor(async () => {
        const rows = await db.sql<{ status: string; load_error: string }>(`SELECT status, load_error FROM ml.models WHERE name = 'broken'`);
        return rows[0]?.status === 'invalid' && rows;
      }, 'model marked invalid');
      expect(model!.load_error).toMatch(/^onnxruntime cannot load model broken@1: /);
      const [deployment] = await db.sql<{ status: string; reason: string }>(`SELECT status, reason FROM ml.deployments WHERE deployment = 'broken'`);
      expect(deployment!.status).toBe('invalid');
      expect(deployment!.reason).toMatch(/^model broken@1 cannot be loaded: onnxruntime cannot load model broken@1/);
      await db.sql(`INSERT INTO flowers VALUES (2, 6.7, 3.0, 5.2, 2.3)`);
      await waitFor(async () => (await db.sql<{ species: string }>('SELECT species FROM flowers WHERE id = 2'))[0]?.species === 'virginica', 'other deployment scores');
    } finally {
      await worker.stop();
    }
  });
});

const IRIS_INPUTS_FOR_LIFECYCLE = IRIS_INPUTS;

describe('aliases: a deployment of a name follows production without a restart', () => {
  let db: TestDatabase;

  beforeAll(async () => {
    db = await createTestDatabase();
    await db.sql(`CREATE TABLE patients (id int PRIMARY KEY, sl real, sw real, pl real, pw real)`);
  });
  afterAll(async () => {
    await db?.drop();
  });

  it('promote switches the running worker to the new version; rollback switches back', async () => {
    await push(db, 'clf', 'iris.onnx');
    // Version 2 of the same name answers with another model: the ZipMap export's label output.
    await db.sql(`SELECT ml.deploy('clf', 'patients', 'clf', $1, '{"label": "label"}')`, [IRIS_INPUTS_FOR_LIFECYCLE]);
    const worker = await startWorker(db);
    const versionOf = async (id: number) => {
      const rows = await db.sql<{ label: string | null }>('SELECT label FROM patients WHERE id = $1', [id]);
      return rows[0]?.label;
    };
    try {
      await db.sql(`INSERT INTO patients VALUES (1, 5.1, 3.5, 1.4, 0.2)`);
      await waitFor(async () => (await versionOf(1)) === 'setosa', 'v1 prediction');

      await push(db, 'clf', 'iris_zipmap.onnx');
      const promoteError = await db.sql(`SELECT ml.promote('clf', 2)`).catch((e: Error) => e.message);
      expect(promoteError).toBe(
        'deployment "clf" follows clf@production and does not fit version 2: outputs maps column "label" to "label", but model clf@2 has no output "label" (its tensor outputs: output_label string[null])',
      );
      const [models] = await db.sql<{ aliases: string[] }>(`SELECT aliases FROM ml.models WHERE name = 'clf' AND version = 1`);
      expect(models!.aliases).toEqual(['production']);

      await push(db, 'clf', 'iris.onnx');
      await db.sql(`SELECT ml.promote('clf', 3)`);
      const [deployment] = await db.sql<{ model_version: number }>(`SELECT model_version FROM ml.deployments`);
      expect(deployment!.model_version).toBe(3);
      await db.sql(`INSERT INTO patients VALUES (2, 6.7, 3.0, 5.2, 2.3)`);
      await waitFor(async () => (await versionOf(2)) === 'virginica', 'prediction after promote');
      await waitFor(async () => (await db.sql<{ model: string }>('SELECT model FROM ml.status'))[0]?.model === 'clf@3', 'status shows v3');

      const [rolledBack] = await db.sql<{ version: number }>(`SELECT ml.rollback('clf') AS version`);
      expect(rolledBack!.version).toBe(1);
      await expect(db.sql(`SELECT ml.rollback('clf')`)).rejects.toThrow('alias clf@production has no earlier version to roll back to');
    } finally {
      await worker.stop();
    }
  });
});
