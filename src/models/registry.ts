import { createHash } from 'node:crypto';
import type pg from 'pg';
import { recordSignature } from '../db/statements.js';
import { UsageError } from '../errors.js';
import { baselineFromCsv } from '../monitoring/baseline-file.js';
import { loadModel } from './sessions.js';

/**
 * The largest model pgscore stores: 2 GiB - 1 byte, the most onnxruntime reads from one ONNX file
 * (a protobuf message). Larger models keep their weights in external data files, which pgscore
 * does not store.
 */
export const MAX_MODEL_BYTES = 2 ** 31 - 1;

/**
 * What one statement stores of a model. Postgres keeps a value, and the protocol message that
 * carries it, under 1 GiB (its MaxAllocSize): a larger model is stored in parts, the first by
 * ml.register_model and the others by ml._append_model_part, in one transaction.
 */
export const MODEL_PART_BYTES = 512 * 1024 * 1024;

export interface PushedModel {
  readonly name: string;
  readonly version: number;
  readonly aliases: readonly string[];
}

/**
 * `pgscore model push`: loads the file with onnxruntime first (so a file that will not load is
 * refused before it is stored), then registers it with its signature (and the summaries of its
 * training data, when a baseline CSV is given) in one transaction.
 */
export async function pushModel(
  db: pg.Pool,
  name: string,
  bytes: Uint8Array,
  options: { metadata?: Record<string, unknown>; promote?: boolean; baseline?: { file: string; text: string }; partBytes?: number } = {},
): Promise<PushedModel> {
  if (bytes.byteLength > MAX_MODEL_BYTES) {
    const size = (n: number) => n.toLocaleString('en-US');
    throw new UsageError(`model ${name} is ${size(bytes.byteLength)} bytes; pgscore stores models of up to 2 GiB - 1 (${size(MAX_MODEL_BYTES)} bytes)`, {
      hint: 'onnxruntime reads at most 2 GiB from one ONNX file. Make the model smaller: fewer or float16 / int8-quantized weights.',
    });
  }
  const model = await loadModel(name, bytes, { threads: 1 });
  await model.session.release();
  // A baseline file that does not fit the model is refused before anything is stored.
  const baseline = options.baseline ? baselineFromCsv(options.baseline.text, options.baseline.file, model.signature) : undefined;
  const client = await db.connect();
  try {
    await client.query('BEGIN');
    const all = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const partBytes = options.partBytes ?? MODEL_PART_BYTES;
    const { rows } = await client.query<{ version: number }>('SELECT ml.register_model($1, $2, $3::jsonb) AS version', [
      name,
      all.subarray(0, partBytes),
      JSON.stringify(options.metadata ?? {}),
    ]);
    const version = rows[0]!.version;
    if (all.length > partBytes) {
      const sha256 = createHash('sha256').update(all).digest('hex');
      for (let at = partBytes; at < all.length; at += partBytes) {
        await client.query('SELECT ml._append_model_part($1, $2, $3, $4)', [name, version, all.subarray(at, at + partBytes), sha256]);
      }
    }
    await recordSignature(client, { name, version }, { signature: model.signature });
    if (baseline) {
      await client.query("SELECT ml._store_baseline($1, $2, 'file', $3, $4, NULL)", [name, version, baseline.rows, JSON.stringify(baseline.inputs)]);
    }
    if (options.promote) await client.query('SELECT ml.promote($1, $2)', [name, version]);
    const aliases = await client.query<{ alias: string }>(
      'SELECT alias FROM ml._aliases WHERE model = $1 AND version = $2 ORDER BY alias',
      [name, version],
    );
    await client.query('COMMIT');
    return { name, version, aliases: aliases.rows.map((row) => row.alias) };
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw error;
  } finally {
    client.release();
  }
}
