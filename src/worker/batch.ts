import type pg from 'pg';
import { BEGIN_WRITEBACK } from '../db/statements.js';
import { isConnectionError } from '../errors.js';
import type { LoadedModel } from '../models/sessions.js';
import { scoreRows } from '../scoring/score.js';
import { writePredictions } from '../writeback/writeback.js';
import type { ActiveDeployment } from './deployments.js';

export interface BatchResult {
  readonly deployment: string;
  readonly claimed: number;
  readonly written: number;
  readonly dead: number;
  readonly requeued: number;
  readonly ms: number;
  /** Where the time went: claim and read, model, write-back and commit. */
  readonly phases?: { readonly claimMs: number; readonly scoreMs: number; readonly writeMs: number };
}

/**
 * One batch in one transaction: claim queued rows (SKIP LOCKED) with their current inputs,
 * score them, write predictions and dead letters, delete the queue rows, commit. A crash at any
 * point before the commit leaves the rows queued.
 */
export async function runBatch(
  pool: pg.Pool,
  deployment: ActiveDeployment,
  model: LoadedModel,
  batchSize: number,
): Promise<BatchResult> {
  const started = performance.now();
  const client = await pool.connect();
  let failure: unknown;
  try {
    await client.query(BEGIN_WRITEBACK);
    const claimed = await client.query<unknown[]>({ ...deployment.sql.claim, values: [batchSize] });
    const rows = claimed.rows;
    if (rows.length === 0) {
      await client.query('COMMIT');
      return { deployment: deployment.name, claimed: 0, written: 0, dead: 0, requeued: 0, ms: performance.now() - started };
    }
    const claimedAt = performance.now();
    const batch = { rows, keyCount: deployment.plan.keys.length, claimedAt };
    const scored = await scoreRows(model, deployment.plan, rows, deployment.sql.firstValue);
    const scoredAt = performance.now();
    const result = await writePredictions(client, deployment.id, deployment.sql, batch, scored, scoredAt);
    await client.query('COMMIT');
    const done = performance.now();
    return {
      deployment: deployment.name,
      claimed: rows.length,
      ...result,
      ms: done - started,
      phases: { claimMs: claimedAt - started, scoreMs: scoredAt - claimedAt, writeMs: done - scoredAt },
    };
  } catch (error) {
    failure = error;
    await client.query('ROLLBACK').catch(() => undefined);
    throw error;
  } finally {
    // A connection that failed is not given back to the pool.
    client.release(isConnectionError(failure) ? (failure as Error) : undefined);
  }
}
