import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { exited, startPgscore } from '../helpers/cli.js';
import { createTestDatabase, modelBytes, pending, startWorker, waitFor, type TestDatabase } from '../helpers/db.js';
import type { BatchFailure } from '../../src/worker/loop.js';
import { padModel } from '../helpers/large-model.js';
import { describe as describeError, UsageError } from '../../src/errors.js';
import { MAX_MODEL_BYTES, pushModel } from '../../src/models/registry.js';

const MiB = 1024 * 1024;
const INPUTS = '{"X": ["sl", "sw", "pl", "pw"]}';

/** Peak resident memory of a process (VmHWM), in MiB. */
async function peakRssMiB(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/VmHWM:\s+(\d+) kB/.exec(status)![1]) / 1024;
}

/**
 * A model registered through SQL is read by the worker in slices: read as one value, a model of
 * 270 MiB (540 MiB of hex text) crashed the worker with ERR_STRING_TOO_LONG on every start.
 */
describe('large models', () => {
  let db: TestDatabase;

  beforeAll(async () => {
    db = await createTestDatabase();
    await db.sql(`CREATE TABLE flowers (id int PRIMARY KEY, sl real, sw real, pl real, pw real)`);
    await db.sql(`INSERT INTO flowers VALUES (1, 5.1, 3.5, 1.4, 0.2), (2, 6.7, 3.0, 5.2, 2.3)`);
  });
  afterAll(async () => {
    await db?.drop();
  });

  it('pgscore model push refuses a model above 2 GiB - 1, the most onnxruntime reads from one file, before sending it', async () => {
    // Not filled: the pages of the buffer are never touched.
    const tooLarge = Buffer.allocUnsafe(MAX_MODEL_BYTES + 1);
    const refusal = await pushModel(db.pool, 'huge', tooLarge).catch((error: unknown) => error);
    expect(refusal).toBeInstanceOf(UsageError);
    expect(describeError(refusal)).toBe('model huge is 2,147,483,648 bytes; pgscore stores models of up to 2 GiB - 1 (2,147,483,647 bytes)\n' +
      'hint: onnxruntime reads at most 2 GiB from one ONNX file. Make the model smaller: fewer or float16 / int8-quantized weights.');
    expect(await db.sql(`SELECT name FROM ml.models WHERE name = 'huge'`)).toEqual([]);
  });

  it('a model above what one Postgres value holds is stored in parts, read back whole, and checked against its sha256', async () => {
    // 1 MiB parts stand for the 512 MiB ones of a model above 1 GiB.
    const bytes = padModel(await modelBytes('iris.onnx'), 3.5 * MiB);
    await db.sql(`CREATE TABLE parted (id int PRIMARY KEY, sl real, sw real, pl real, pw real)`);
    for (let version = 1; version <= 2; version++) {
      expect(await pushModel(db.pool, 'parted', bytes, { partBytes: MiB })).toMatchObject({ version });
    }
    expect(await db.sql(`SELECT version, count(*)::int AS parts FROM ml._model_parts WHERE name = 'parted' GROUP BY 1 ORDER BY 1`))
      .toEqual([{ version: 1, parts: 3 }, { version: 2, parts: 3 }]);
    expect(await db.sql(`SELECT version, size_bytes, sha256 FROM ml.models WHERE name = 'parted' ORDER BY version`)).toEqual([1, 2].map((version) => ({
      version, size_bytes: bytes.length, sha256: createHash('sha256').update(bytes).digest('hex'),
    })));
    // A part is appended only in the transaction that registered the model.
    await expect(db.sql(`SELECT ml._append_model_part('parted', 1, '\\x00', repeat('a', 64))`)).rejects.toMatchObject({
      code: '55000', message: 'model parted@1 was not registered in this transaction',
    });
    // Version 2 gets a damaged part (its third MiB): it pauses its own deployment, and version 1 scores on.
    await db.sql(`UPDATE ml._model_parts SET bytes = overlay(bytes PLACING '\\xff'::bytea FROM 100) WHERE name = 'parted' AND version = 2 AND part = 2`);
    await db.sql(`SELECT ml.deploy('whole', 'parted', 'parted@1', $1, '{"species": "label"}')`, [INPUTS]);
    await db.sql(`SELECT ml.deploy('damaged', 'parted', 'parted@2', $1, '{"damaged_species": "label"}')`, [INPUTS]);
    const worker = await startWorker(db);
    const failures: BatchFailure[] = [];
    worker.on('failure', (failure) => failures.push(failure));
    try {
      await db.sql(`INSERT INTO parted VALUES (1, 5.1, 3.5, 1.4, 0.2), (2, 6.7, 3.0, 5.2, 2.3)`);
      await waitFor(async () => (await pending(db, 'whole')) === 0 && failures.some((f) => f.deployment === 'damaged'), 'scored and paused');
    } finally {
      await worker.stop();
    }
    expect(await db.sql('SELECT id, species, damaged_species FROM parted ORDER BY id')).toEqual([
      { id: 1, species: 'setosa', damaged_species: null },
      { id: 2, species: 'virginica', damaged_species: null },
    ]);
    expect(failures.find((f) => f.deployment === 'damaged')).toEqual({
      deployment: 'damaged',
      kind: 'pause',
      reason: `model parted@2 is damaged: its 4 parts have sha256 ${createHash('sha256').update(Buffer.concat([
        bytes.subarray(0, 2 * MiB + 99), Buffer.from([0xff]), bytes.subarray(2 * MiB + 100)])).digest('hex')}, not ${createHash('sha256').update(bytes).digest('hex')} as registered`,
    });
    expect(await pending(db, 'damaged')).toBe(2);

    // Removing the version takes its parts with it.
    await db.sql(`SELECT ml.undeploy('damaged')`);
    await db.sql(`SELECT ml.remove_model('parted', 2)`);
    expect(await db.sql(`SELECT DISTINCT version FROM ml._model_parts WHERE name = 'parted'`)).toEqual([{ version: 1 }]);
    expect(await db.sql(`SELECT version, size_bytes::int FROM ml._removed_models WHERE name = 'parted'`)).toEqual([{ version: 2, size_bytes: bytes.length }]);
  });

  it('a 270 MiB model registered through SQL loads in a `pgscore worker` and scores (load time and peak RSS logged)', async () => {
    const bytes = padModel(await modelBytes('iris.onnx'), 270 * MiB);
    const registering = performance.now();
    await db.sql(`SELECT ml.register_model('big', $1)`, [bytes]);
    const registerMs = performance.now() - registering;
    await db.sql(`SELECT ml.deploy('big', 'flowers', 'big', $1, '{"species": "label"}')`, [INPUTS]);

    const started = performance.now();
    const worker = startPgscore(['worker', '--concurrency', '1'], { DATABASE_URL: db.workerUrl, PGSCORE_LOG_LEVEL: 'info' });
    try {
      await waitFor(async () => {
        if (worker.exitCode !== null) throw new Error(`the worker exited with ${worker.exitCode}:\n${worker.output()}`);
        const rows = await db.sql<{ species: string | null }>("SELECT to_jsonb(f)->>'species' AS species FROM flowers f ORDER BY id");
        return rows.every((r) => r.species !== null);
      }, 'both rows scored', 300_000);
      const scoredMs = performance.now() - started;
      const rss = await peakRssMiB(worker.pid!);
      console.log(`${(bytes.length / MiB).toFixed(0)} MiB model: registered through SQL in ${(registerMs / 1000).toFixed(1)} s; ` +
        `worker start to both rows scored ${(scoredMs / 1000).toFixed(1)} s; worker peak RSS ${rss.toFixed(0)} MiB`);
      expect(await db.sql('SELECT species FROM flowers ORDER BY id')).toEqual([{ species: 'setosa' }, { species: 'virginica' }]);
      expect(await db.sql(`SELECT status, size_bytes FROM ml.models WHERE name = 'big'`))
        .toEqual([{ status: 'ready', size_bytes: bytes.length }]);
      expect(worker.output()).not.toContain('ERR_STRING_TOO_LONG');
      worker.kill('SIGTERM');
      expect(await exited(worker)).toBe(0);
    } finally {
      worker.kill('SIGKILL');
    }
  }, 600_000);
});
