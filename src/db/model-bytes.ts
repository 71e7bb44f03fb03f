import { createHash } from 'node:crypto';
import type pg from 'pg';
import { ModelError, PgscoreError } from '../errors.js';

/**
 * How much of a model one statement reads. A bytea comes back as hex text, twice its size, and a
 * JavaScript string holds at most 2^29 - 24 characters (~512 MiB): a model of 270 MiB read in one
 * piece crashed the worker (ERR_STRING_TOO_LONG, thrown inside node-postgres' socket handler, out
 * of reach of any catch). 32 MiB slices keep each message and string small.
 */
export const MODEL_SLICE_BYTES = 32 * 1024 * 1024;

const READ_LAYOUT = `
  SELECT length(m.onnx) AS first, m.sha256,
         ARRAY(SELECT length(p.bytes) FROM ml._model_parts p WHERE p.name = m.name AND p.version = m.version ORDER BY p.part) AS parts
    FROM ml._models m WHERE m.name = $1 AND m.version = $2`;
const READ_FIRST = 'SELECT substring(onnx FROM $3 FOR $4) AS slice FROM ml._models WHERE name = $1 AND version = $2';
const READ_PART = 'SELECT substring(bytes FROM $4 FOR $5) AS slice FROM ml._model_parts WHERE name = $1 AND version = $2 AND part = $3';

/**
 * The ONNX bytes of a model version, read in slices into one buffer, in one REPEATABLE READ
 * transaction so that every slice comes from the same rows: the first part (ml._models.onnx),
 * then the others of a model above what one value holds (ml._model_parts), whose whole-file
 * sha256 is checked. Values are stored uncompressed (sql/migrations/0010_models.sql), so a
 * substring() reads only its slice's TOAST chunks. A model this process cannot hold, or whose
 * parts do not add up to its sha256, is a ModelError (the failure policy pauses its
 * deployments), never a crash.
 */
export async function fetchModelBytes(db: pg.Pool, name: string, version: number): Promise<Uint8Array> {
  const ref = `${name}@${version}`;
  const client = await db.connect();
  try {
    await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    const { rows } = await client.query<{ first: number; sha256: string; parts: number[] }>(READ_LAYOUT, [name, version]);
    const layout = rows[0];
    if (!layout) throw new PgscoreError(`model ${ref} does not exist (removed?)`);
    const sizes = [layout.first, ...layout.parts];
    const size = sizes.reduce((sum, n) => sum + n, 0);
    let bytes: Buffer;
    try {
      bytes = Buffer.allocUnsafe(size);
    } catch (error) {
      throw new ModelError(`model ${ref} (${size} bytes) is too large for this worker: ${(error as Error).message}`, { cause: error });
    }
    let at = 0;
    for (const [part, partSize] of sizes.entries()) {
      for (let from = 0; from < partSize; from += MODEL_SLICE_BYTES) {
        const read = part === 0
          ? await client.query<{ slice: Buffer }>(READ_FIRST, [name, version, from + 1, MODEL_SLICE_BYTES])
          : await client.query<{ slice: Buffer }>(READ_PART, [name, version, part, from + 1, MODEL_SLICE_BYTES]);
        const slice = read.rows[0]?.slice;
        if (!slice) throw new PgscoreError(`model ${ref} was removed while it was read`);
        at += slice.copy(bytes, at);
      }
    }
    await client.query('COMMIT');
    if (sizes.length > 1) {
      const sha256 = createHash('sha256').update(bytes).digest('hex');
      if (sha256 !== layout.sha256) {
        throw new ModelError(`model ${ref} is damaged: its ${sizes.length} parts have sha256 ${sha256}, not ${layout.sha256} as registered`);
      }
    }
    return bytes;
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw error;
  } finally {
    client.release();
  }
}
