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
 * written. Where failures are dense (most rows of the half just searched failed), the other half
 * is tried a row at a time, which takes n tries where halving takes 2n − 1; the refused rows
 * become dead letters together, in one last write (the generated suite's F15: 602 rows all
 * violating a CHECK took 8 s, one write per try and another per dead letter). A failure no row
 * can avoid (isTableFailure) throws UnwritableTableError, after the savepoint is rolled back: the
 * batch's transaction stays usable, its rows go back to the queue.
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
  const refused: { row: number; reason: string }[] = [];
  /** The write-back of `part` in a savepoint: its result, or the row failure that undid it. */
  const attempt = async (part: Scored): Promise<WriteResult | Error> => {
    await client.query('SAVEPOINT pgscore_write');
    try {
      const result = await writePredictions(client, deployment, rows, part, elapsedMs, by, shadow);
      await client.query('RELEASE SAVEPOINT pgscore_write');
      return result;
    } catch (error) {
      await client.query('ROLLBACK TO SAVEPOINT pgscore_write');
      await client.query('RELEASE SAVEPOINT pgscore_write');
      if (isTableFailure(error)) throw new UnwritableTableError(deployment.id, error);
      if (!isWriteRowFailure(error)) throw error;
      return error as Error;
    }
  };
  /** Writes what of `part` the table takes; `dense`: try it a row at a time. */
  const write = async (part: Scored, dense: boolean): Promise<WriteResult> => {
    if (part.rows.length === 0) return NOTHING;
    if (dense && part.rows.length > 1) {
      let total = NOTHING;
      for (let i = 0; i < part.rows.length; i++) total = sum(total, await write(slice(part, i, i + 1), false));
      return total;
    }
    const outcome = await attempt(part);
    return outcome instanceof Error ? search(part, outcome) : outcome;
  };
  /** `part` failed on `error`: one row is refused; more are searched by halves. */
  const search = async (part: Scored, error: Error): Promise<WriteResult> => {
    if (part.rows.length === 1) {
      refused.push({ row: part.rows[0]!, reason: `the prediction cannot be written to the table: ${error.message}` });
      return NOTHING;
    }
    const half = Math.ceil(part.rows.length / 2);
    const before = refused.length;
    const first = await write(slice(part, 0, half), false);
    const second = await write(slice(part, half, part.rows.length), (refused.length - before) * 2 > half);
    return sum(first, second);
  };

  // The whole batch first, with the model's rejections: the common case after a failed batch is
  // a batch that no longer fails (the failing row changed, or was claimed by another batch).
  const whole = await attempt(scored);
  if (!(whole instanceof Error)) return whole;
  let total = await search({ ...scored, rejected: [] }, whole);
  // The refused rows and the model's rejections, as dead letters in one write.
  if (refused.length > 0 || scored.rejected.length > 0) {
    total = sum(total, await writePredictions(client, deployment, rows,
      { rows: [], columns: scored.columns.map(() => []), rejected: [...scored.rejected, ...refused] }, elapsedMs, by, shadow));
  }
  return total;
}

const NOTHING: WriteResult = { written: 0, dead: 0, requeued: 0 };

/** Scored rows from..to (positions), without the model's rejections (they are written once, at the end). */
function slice(scored: Scored, from: number, to: number): Scored {
  return {
    rows: scored.rows.slice(from, to),
    columns: scored.columns.map((column) => column.slice(from, to)),
    rejected: [],
  };
}

function sum(a: WriteResult, b: WriteResult): WriteResult {
  const deadReason = a.deadReason ?? b.deadReason;
  return { written: a.written + b.written, dead: a.dead + b.dead, requeued: a.requeued + b.requeued, ...(deadReason ? { deadReason } : {}) };
}
