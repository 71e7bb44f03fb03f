import type pg from 'pg';
import { BEGIN_WRITEBACK } from '../db/statements.js';
import { isConnectionError } from '../errors.js';
import type { LoadedModel } from '../models/sessions.js';
import { claimBatch, type ClaimSizer } from '../queue/claim.js';
import type { ClaimedRow } from '../queue/claimed-row.js';
import { scoreRows } from '../scoring/score.js';
import type { RateLimitedLog } from '../log-limit.js';
import type { ActiveDeployment } from '../worker/deployments.js';
import { writePredictions, type WriteResult } from '../writeback/writeback.js';

export interface BatchResult {
  readonly deployment: string;
  readonly claimed: number;
  readonly written: number;
  readonly dead: number;
  /** The reason of the batch's first dead letter (a bad value, or the model's own error message). */
  readonly deadReason?: string;
  readonly requeued: number;
  readonly ms: number;
  /** Where the time went: claim and read (or decode), model, write-back and commit. */
  readonly phases?: { readonly claimMs: number; readonly scoreMs: number; readonly writeMs: number };
}

/**
 * Runs body in the worker's write-back transaction (its writes do not queue rows again) on a
 * pooled connection; a connection that failed is not given back to the pool.
 */
export async function inWritebackTransaction<T>(pool: pg.Pool, body: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  let failure: unknown;
  try {
    await client.query(BEGIN_WRITEBACK);
    const result = await body(client);
    await client.query('COMMIT');
    return result;
  } catch (error) {
    failure = error;
    await client.query('ROLLBACK').catch(() => undefined);
    throw error;
  } finally {
    client.release(isConnectionError(failure) ? (failure as Error) : undefined);
  }
}

/**
 * The batch pipeline both transports run, inside the caller's transaction: score the rows with
 * one session.run, then write predictions, dead letters and statistics with one statement.
 */
export async function scoreBatch(
  client: pg.ClientBase,
  deployment: ActiveDeployment,
  model: LoadedModel,
  rows: readonly ClaimedRow[],
  readAt: number,
): Promise<WriteResult & { scoredAt: number }> {
  const scored = await scoreRows(model, deployment.plan, rows.map((row) => row.values));
  const scoredAt = performance.now();
  const result = await writePredictions(client, deployment, rows, scored, scoredAt - readAt, model.ref);
  return { ...result, scoredAt };
}

/**
 * The notify transport's batch, in one transaction: claim queued rows (SKIP LOCKED) with their
 * current inputs, score them, write predictions and dead letters, delete the queue rows,
 * commit. A crash at any point before the commit leaves the rows queued.
 */
export async function claimAndScore(
  pool: pg.Pool,
  deployment: ActiveDeployment,
  model: LoadedModel,
  batchSize: number,
  sizer: ClaimSizer,
): Promise<BatchResult> {
  const started = performance.now();
  let timing = { claimedAt: started, scoredAt: started };
  const result = await inWritebackTransaction(pool, async (client) => {
    const rows = await claimBatch(client, deployment, batchSize, sizer);
    const claimedAt = performance.now();
    if (rows.length === 0) return { claimed: 0, written: 0, dead: 0, requeued: 0 };
    const { scoredAt, ...written } = await scoreBatch(client, deployment, model, rows, claimedAt);
    timing = { claimedAt, scoredAt };
    return { claimed: rows.length, ...written };
  });
  const done = performance.now();
  return {
    deployment: deployment.name,
    ...result,
    ms: done - started,
    phases: { claimMs: timing.claimedAt - started, scoreMs: timing.scoredAt - timing.claimedAt, writeMs: done - timing.scoredAt },
  };
}

/**
 * Logs a batch's dead letters: onnxruntime's errors on rows arrive here (its native log is
 * silenced), as do bad values. One line per deployment, repeats at most every 10 s.
 */
export function reportDeadLetters(log: RateLimitedLog, deployment: { id: number; name: string }, result: { dead: number; deadReason?: string }): void {
  if (result.dead === 0) return;
  log.warn(`dead:${deployment.id}`, { deployment: deployment.name, dead: result.dead },
    `${result.dead} row(s) became dead letters (see ml.errors), e.g.: ${result.deadReason}`);
}
