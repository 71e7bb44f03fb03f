import { createHash } from 'node:crypto';
import pg from 'pg';
import { ModelError, PgscoreError } from '../errors.js';

/**
 * How much of a model one statement reads. Read as one value, a model of 270 MiB crashed the
 * worker: node-postgres decodes every column it receives into a string (a bytea as hex, twice its
 * size), and a JavaScript string holds at most 2^29 - 24 characters (~512 MiB); the
 * ERR_STRING_TOO_LONG was thrown inside its socket handler, out of reach of any catch. Slices
 * keep every message small.
 */
export const MODEL_SLICE_BYTES = 32 * 1024 * 1024;

/**
 * Runs `COPY (...) TO STDOUT (FORMAT binary)` and returns what it sent. COPY's data reaches the
 * query as raw bytes (node-postgres hands CopyData to the query and decodes nothing), so a model
 * crosses the wire as it is: 32 MiB came in 3.7-4.1 s as hex text and 2.1-2.4 s as base64 (the
 * server's encoding and the client's decoding), against a server-side read of 0.15-0.3 s.
 */
function copyOut(client: pg.PoolClient, sql: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    class CopyOut extends pg.Query {
      handleCopyData(message: { chunk: Buffer }): void {
        chunks.push(message.chunk);
      }
    }
    client.query(new CopyOut(sql, undefined, (error: Error | undefined) => (error ? reject(error) : resolve(Buffer.concat(chunks)))));
  });
}

/** The value of the one bytea column of the one row of a binary COPY, or undefined for none. */
function copiedValue(stream: Buffer): Buffer | undefined {
  // PGCOPY\n\377\r\n\0, 32 bits of flags, the length of a header extension, the extension.
  let at = 19 + stream.readUInt32BE(15);
  if (stream.readInt16BE(at) !== 1) return undefined; // -1: the trailer, no row
  at += 2;
  const length = stream.readInt32BE(at);
  return length < 0 ? undefined : stream.subarray(at + 4, at + 4 + length);
}

const READ_LAYOUT = `
  SELECT length(m.onnx) AS first, m.sha256,
         ARRAY(SELECT length(p.bytes) FROM ml._model_parts p WHERE p.name = m.name AND p.version = m.version ORDER BY p.part) AS parts
    FROM ml._models m WHERE m.name = $1 AND m.version = $2`;
/** A slice of a part: COPY takes no parameters, so the values are literals (the name quoted). */
function readSlice(name: string, version: number, part: number, from: number, length: number): string {
  const slice = part === 0
    ? `SELECT substring(onnx FROM ${from + 1} FOR ${length}) FROM ml._models WHERE name = ${pg.escapeLiteral(name)} AND version = ${version}`
    : `SELECT substring(bytes FROM ${from + 1} FOR ${length}) FROM ml._model_parts
        WHERE name = ${pg.escapeLiteral(name)} AND version = ${version} AND part = ${part}`;
  return `COPY (${slice}) TO STDOUT (FORMAT binary)`;
}

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
        const slice = copiedValue(await copyOut(client, readSlice(name, version, part, from, MODEL_SLICE_BYTES)));
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
