import type pg from 'pg';
import { keyColumns, type ClaimedRow } from '../queue/claimed-row.js';
import type { Scored } from '../scoring/score.js';
import { histogram } from '../worker/latency.js';
import type { DeploymentStatements } from '../queue/statements.js';

/** Batches up to this many rows use the prepared write-back statement (see DeploymentStatements). */
const PREPARED_UP_TO = 100;

export interface WriteResult {
  readonly written: number;
  readonly dead: number;
  /** The reason of the batch's first dead letter, for the log. */
  readonly deadReason?: string;
  /** Rows locked by someone else or changed while they were scored; they went back to the queue. */
  readonly requeued: number;
}

/**
 * One statement, inside the batch's transaction (sql.ts): write predictions (only where the row
 * is still the version that was read), queue again the rows that could not be written, record
 * dead letters, clear old dead letters of rows that now scored, and record the batch's statistics.
 */
export async function writePredictions(
  client: pg.ClientBase,
  deployment: { readonly id: number; readonly sql: DeploymentStatements; readonly keyCount: number },
  rows: readonly ClaimedRow[],
  scored: Scored,
  /** Milliseconds since the rows were read (added to each row's age for the latency statistics). */
  elapsedMs: number,
  /** The model version that scored the rows, for the provenance column. */
  modelRef: string,
): Promise<WriteResult> {
  const scoredRows = scored.rows.map((r) => rows[r]!);
  const deadRows = scored.rejected.map((r) => rows[r.row]!);
  const values: unknown[] = [
    deployment.id,
    ...keyColumns(scoredRows, deployment.keyCount),
    scoredRows.map((row) => row.xmin),
    scoredRows.map((row) => row.tid),
    scoredRows.map((row) => row.attempts),
    ...scored.columns,
    ...keyColumns(deadRows, deployment.keyCount),
    scored.rejected.map((r) => r.reason),
    histogram(scoredRows.map((row) => row.ageMs + elapsedMs)),
    modelRef,
  ];
  const statement = rows.length <= PREPARED_UP_TO ? deployment.sql.writeBack : { text: deployment.sql.writeBack.text };
  const result = await client.query<{ written: number }>({ ...statement, values });
  const written = result.rows[0]?.written ?? 0;
  const deadReason = scored.rejected[0]?.reason;
  return { written, dead: deadRows.length, requeued: scoredRows.length - written, ...(deadReason ? { deadReason } : {}) };
}
