import { readFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { exited, startPgscore } from '../helpers/cli.js';
import { createTestDatabase, modelBytes, waitFor, type TestDatabase } from '../helpers/db.js';
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

  it('pgscore model push refuses a model above 1023 MiB, the most one Postgres value holds, before sending it', async () => {
    // Not filled: the pages of the buffer are never touched.
    const tooLarge = Buffer.allocUnsafe(MAX_MODEL_BYTES + 1);
    const refusal = await pushModel(db.pool, 'huge', tooLarge).catch((error: unknown) => error);
    expect(refusal).toBeInstanceOf(UsageError);
    expect(describeError(refusal)).toBe('model huge is 1,072,693,249 bytes; pgscore stores models of up to 1023 MiB (1,072,693,248 bytes)\n' +
      'hint: Postgres keeps one value under 1 GiB. Make the model smaller: fewer or float16 / int8-quantized weights.');
    expect(await db.sql(`SELECT name FROM ml.models WHERE name = 'huge'`)).toEqual([]);
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
