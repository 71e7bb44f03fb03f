/**
 * What no scorer of a table can beat on this machine, timed with the scoring taken out:
 * the write path (the per-chunk ranged `UPDATE … FROM` of predictions already in the database)
 * and the read path (the features streamed out by binary COPY, nothing done with them).
 */
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import pg from 'pg';
import { to as copyTo } from 'pg-copy-streams';
import { FEATURES } from './db.js';

/**
 * Copies the predictions of a scored table into an unlogged table keyed by id (not timed), so
 * that the write path can apply real values.
 */
export async function savePredictions(pool: pg.Pool, scored: string, into: string): Promise<void> {
  const target = pg.escapeIdentifier(into);
  await pool.query(`DROP TABLE IF EXISTS ${target}`);
  await pool.query(`CREATE UNLOGGED TABLE ${target} AS SELECT id, label, p1 FROM ${pg.escapeIdentifier(scored)} ORDER BY id`);
  await pool.query(`ALTER TABLE ${target} ADD PRIMARY KEY (id)`);
  await pool.query(`VACUUM ANALYZE ${target}`);
}

/**
 * Applies the saved predictions to `table` one 10k-id range at a time, each UPDATE its own
 * transaction (the batch job's ranged UPDATE and commit, without its FETCH, scoring and COPY).
 * Both sides are ranged: Postgres does not carry a range across `t.id = p.id`. Returns rows updated.
 */
export async function writePathLimit(url: string, table: string, predictions: string, chunkRows = 10_000): Promise<number> {
  const t = pg.escapeIdentifier(table);
  const p = pg.escapeIdentifier(predictions);
  const client = new pg.Client({ connectionString: url, application_name: 'bench write-path limit' });
  await client.connect();
  try {
    const { rows } = await client.query<{ lo: string; hi: string }>(`SELECT min(id) AS lo, max(id) AS hi FROM ${p}`);
    const lo = Number(rows[0]!.lo);
    const hi = Number(rows[0]!.hi);
    const update = {
      name: 'apply_saved_predictions',
      text: `UPDATE ${t} AS t SET label = p.label, p1 = p.p1 FROM ${p} AS p WHERE t.id = p.id AND t.id BETWEEN $1 AND $2 AND p.id BETWEEN $1 AND $2`,
    };
    let updated = 0;
    for (let from = lo; from <= hi; from += chunkRows) {
      updated += (await client.query({ ...update, values: [from, Math.min(from + chunkRows - 1, hi)] })).rowCount ?? 0;
    }
    return updated;
  } finally {
    await client.end();
  }
}

/** Streams `COPY (SELECT id, f0..f29 … ORDER BY id) TO STDOUT (FORMAT binary)` to nowhere; returns bytes read. */
export async function readPathLimit(url: string, table: string): Promise<number> {
  const client = new pg.Client({ connectionString: url, application_name: 'bench read-path limit' });
  await client.connect();
  let bytes = 0;
  try {
    const copy = client.query(copyTo(`COPY (SELECT id, ${FEATURES.join(', ')} FROM ${pg.escapeIdentifier(table)} ORDER BY id) TO STDOUT (FORMAT binary)`));
    await pipeline(
      copy,
      new Writable({
        write(chunk: Buffer, _encoding, done) {
          bytes += chunk.length;
          done();
        },
      }),
    );
    return bytes;
  } finally {
    await client.end();
  }
}
