import type pg from 'pg';
import type { DeploymentSql } from '../db/statements.js';
import type { Scored } from '../scoring/score.js';
import { histogram } from '../worker/latency.js';

/** Batches up to this many rows use the prepared write-back statement (see DeploymentSql). */
const PREPARED_UP_TO = 100;

export interface ClaimedBatch {
  /** Rows as claimed: [key texts..., age_ms, xmin, ctid, queue rows, source values...]. */
  readonly rows: readonly (readonly unknown[])[];
  readonly keyCount: number;
  /** performance.now() when the claim returned, to add the time spent since to each row's age. */
  readonly claimedAt: number;
}

export interface WriteResult {
  readonly written: number;
  readonly dead: number;
  /** Rows whose inputs changed while they were scored; they went back to the queue. */
  readonly requeued: number;
}

/**
 * One statement, inside the batch's transaction: write predictions (only where the row is still
 * the version that was read), queue again the rows that changed meanwhile, record dead letters,
 * clear old dead letters of rows that now scored, and record the batch's statistics.
 */
export async function writePredictions(
  client: pg.ClientBase,
  deploymentId: number,
  sql: DeploymentSql,
  batch: ClaimedBatch,
  scored: Scored,
  now: number,
): Promise<WriteResult> {
  const { rows, keyCount } = batch;
  const keyArrays = (indexes: readonly number[]) =>
    Array.from({ length: keyCount }, (_, k) => indexes.map((r) => rows[r]![k]));
  const elapsed = now - batch.claimedAt;
  const latencies = scored.rows.map((r) => (rows[r]![keyCount] as number) + elapsed);
  const deadRows = scored.rejected.map((r) => r.row);

  const values: unknown[] = [
    deploymentId,
    ...keyArrays(scored.rows),
    scored.rows.map((r) => rows[r]![keyCount + 1]),
    scored.rows.map((r) => rows[r]![keyCount + 2]),
    ...scored.columns,
    ...keyArrays(deadRows),
    scored.rejected.map((r) => r.reason),
    histogram(latencies),
  ];
  const statement = rows.length <= PREPARED_UP_TO ? sql.writeBack : { text: sql.writeBack.text };
  const result = await client.query<{ written: number }>({ ...statement, values });
  const written = result.rows[0]?.written ?? 0;
  return { written, dead: deadRows.length, requeued: scored.rows.length - written };
}
