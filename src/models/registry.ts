import type pg from 'pg';
import { recordSignature } from '../db/statements.js';
import { loadModel } from './sessions.js';

export interface PushedModel {
  readonly name: string;
  readonly version: number;
  readonly aliases: readonly string[];
}

/**
 * `pgscore model push`: loads the file with onnxruntime first (so a file that will not load is
 * refused before it is stored), then registers it with its signature in one transaction.
 */
export async function pushModel(
  db: pg.Pool,
  name: string,
  bytes: Uint8Array,
  options: { metadata?: Record<string, unknown>; promote?: boolean } = {},
): Promise<PushedModel> {
  const model = await loadModel(name, bytes, { threads: 1 });
  await model.session.release();
  const client = await db.connect();
  try {
    await client.query('BEGIN');
    const { rows } = await client.query<{ version: number }>('SELECT ml.register_model($1, $2, $3::jsonb) AS version', [
      name,
      Buffer.from(bytes),
      JSON.stringify(options.metadata ?? {}),
    ]);
    const version = rows[0]!.version;
    await recordSignature(client, { name, version }, { signature: model.signature });
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
