import pg from 'pg';
import { FEATURES, type BenchDatabase } from './db.js';

/** How far a contender's predictions are from pgscore's on the sample (for the notes). */
export interface Agreement {
  readonly sample: number;
  /** Rows whose p1 is not bit-for-bit pgscore's. */
  readonly inexact: number;
  readonly maxDiff: number;
}

/** Labels must match and p1 agree to this; onnxruntime builds (Python's, Node's) may round differently. */
const P1_TOLERANCE = 1e-5;

/**
 * Copies every `step`-th row of `source` (features and id) into `reference`, a table deployed
 * under its own name, for a pgscore worker to score; the contenders are compared with it.
 */
export async function sampleRows(db: BenchDatabase, source: string, reference: string, step: number): Promise<number> {
  const columns = ['id', ...FEATURES].join(', ');
  const res = await db.pool.query(`INSERT INTO ${pg.escapeIdentifier(reference)} (${columns}) SELECT ${columns} FROM ${pg.escapeIdentifier(source)} WHERE id % ${step} = 0`);
  return res.rowCount ?? 0;
}

/**
 * Throws unless every one of the n rows of `table` has a label and p1, and the rows it shares
 * with `reference` (scored by pgscore) carry the same label and p1.
 */
export async function checkScored(db: BenchDatabase, table: string, n: number, reference: string, who: string): Promise<Agreement> {
  const t = pg.escapeIdentifier(table);
  const counted = await db.query<{ n: string; unscored: string }>(`SELECT count(*) AS n, count(*) FILTER (WHERE label IS NULL OR p1 IS NULL) AS unscored FROM ${t}`);
  if (Number(counted[0]!.n) !== n || Number(counted[0]!.unscored) !== 0) {
    throw new Error(`${who}: ${table} has ${counted[0]!.n} rows (expected ${n}), ${counted[0]!.unscored} of them without label or p1`);
  }
  const compared = await db.query<{ sample: string; labels: string; inexact: string; max_diff: number | null }>(
    `SELECT count(*) AS sample, count(*) FILTER (WHERE r.label IS DISTINCT FROM t.label) AS labels,
            count(*) FILTER (WHERE r.p1 IS DISTINCT FROM t.p1) AS inexact, max(abs(r.p1 - t.p1)) AS max_diff
       FROM ${pg.escapeIdentifier(reference)} r JOIN ${t} t USING (id)`,
  );
  const row = compared[0]!;
  const agreement = { sample: Number(row.sample), inexact: Number(row.inexact), maxDiff: row.max_diff ?? 0 };
  if (agreement.sample === 0) throw new Error(`${who}: no row of ${table} is in pgscore's sample ${reference}`);
  if (Number(row.labels) !== 0 || agreement.maxDiff > P1_TOLERANCE) {
    throw new Error(`${who}: on ${agreement.sample} sampled rows, ${row.labels} labels differ from pgscore's and p1 differs by up to ${agreement.maxDiff}`);
  }
  return agreement;
}
