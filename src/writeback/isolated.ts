import type pg from 'pg';
import { isTableFailure, isWriteRowFailure, UnwritableTableError } from '../pipeline/row-failure.js';
import type { ClaimedRow } from '../queue/claimed-row.js';
import type { Scored } from '../scoring/score.js';
import { writePredictions, type ScoredBy, type ShadowScores, type WriteResult } from './writeback.js';

type Deployment = Parameters<typeof writePredictions>[1];

/**
 * The write-back of a batch that failed on a row the table would not take: a CHECK constraint on
 * a prediction column, an owner's trigger that raises, a domain. The write-back runs in a
 * savepoint; when it fails on a row, the rows are split in halves until each failing row is
 * found, and that row becomes a dead letter with the database's reason while the others are
 * written. A failure no row can avoid (isTableFailure) throws UnwritableTableError, after the
 * savepoint is rolled back: the batch's transaction stays usable, its rows go back to the queue.
 */
export async function writePredictionsIsolated(
  client: pg.ClientBase,
  deployment: Deployment & { readonly id: number },
  rows: readonly ClaimedRow[],
  scored: Scored,
  elapsedMs: number,
  by: ScoredBy,
  shadow?: ShadowScores,
): Promise<WriteResult> {
  const write = async (part: Scored): Promise<WriteResult> => {
    await client.query('SAVEPOINT pgscore_write');
    try {
      const result = await writePredictions(client, deployment, rows, part, elapsedMs, by, shadow);
      await client.query('RELEASE SAVEPOINT pgscore_write');
      return result;
    } catch (error) {
      await client.query('ROLLBACK TO SAVEPOINT pgscore_write');
      await client.query('RELEASE SAVEPOINT pgscore_write');
      if (isTableFailure(error)) throw new UnwritableTableError(deployment.id, error);
      if (!isWriteRowFailure(error) || part.rows.length === 0) throw error;
      if (part.rows.length === 1) {
        const reason = `the prediction cannot be written to the table: ${(error as Error).message}`;
        return writePredictions(client, deployment, rows,
          { rows: [], columns: part.columns.map(() => []), rejected: [...part.rejected, { row: part.rows[0]!, reason }] },
          elapsedMs, by, shadow);
      }
      const half = Math.ceil(part.rows.length / 2);
      const first = await write(slice(part, 0, half, true));
      const second = await write(slice(part, half, part.rows.length, false));
      return sum(first, second);
    }
  };
  return write(scored);
}

/** Scored rows from..to (positions), with the model's rejections when asked (they are written once). */
function slice(scored: Scored, from: number, to: number, withRejected: boolean): Scored {
  return {
    rows: scored.rows.slice(from, to),
    columns: scored.columns.map((column) => column.slice(from, to)),
    rejected: withRejected ? scored.rejected : [],
  };
}

function sum(a: WriteResult, b: WriteResult): WriteResult {
  const deadReason = a.deadReason ?? b.deadReason;
  return { written: a.written + b.written, dead: a.dead + b.dead, requeued: a.requeued + b.requeued, ...(deadReason ? { deadReason } : {}) };
}
