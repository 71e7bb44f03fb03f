import type pg from 'pg';
import { BEGIN_WRITEBACK } from '../db/statements.js';
import { isConnectionError } from '../errors.js';
import type { LoadedModel } from '../models/sessions.js';
import { scoreRows } from '../scoring/score.js';
import { writePredictions, type WriteResult } from '../writeback/writeback.js';
import type { ActiveDeployment } from './deployments.js';

export interface BatchResult {
  readonly deployment: string;
  readonly claimed: number;
  readonly written: number;
  readonly dead: number;
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
 * Scores rows in the claim layout ([key texts..., age_ms, xmin, ctid, queue rows, source values...]) and writes
 * predictions, dead letters and statistics, inside the caller's transaction.
 */
export async function scoreAndWrite(
  client: pg.ClientBase,
  deployment: ActiveDeployment,
  model: LoadedModel,
  rows: readonly (readonly unknown[])[],
  claimedAt: number,
): Promise<WriteResult & { scoredAt: number }> {
  const scored = await scoreRows(model, deployment.plan, rows, deployment.sql.firstValue);
  const scoredAt = performance.now();
  const batch = { rows, keyCount: deployment.plan.keys.length, claimedAt };
  const result = await writePredictions(client, deployment.id, deployment.sql, batch, scored, scoredAt);
  return { ...result, scoredAt };
}

/**
 * How many queue rows to lock for a batch of `batchSize` keys. A queue row holds one key (a
 * single-row write) up to 100 (a chunk of a bulk statement); locking far more rows than a
 * batch takes would keep the other lanes from them, so the limit follows what rows held lately.
 */
export class ClaimSizer {
  readonly #keysPerRow = new Map<number, number>();

  constructor(private readonly batchSize: number) {}

  limit(deploymentId: number): number {
    const perRow = this.#keysPerRow.get(deploymentId) ?? 1;
    return Math.max(1, Math.min(this.batchSize, Math.ceil(this.batchSize / perRow)));
  }

  observe(deploymentId: number, keys: number, queueRows: number): void {
    if (queueRows > 0) this.#keysPerRow.set(deploymentId, keys / queueRows);
  }
}

/** Claims a batch (see DeploymentSql.claim) and tells the sizer what it got. */
export async function claim(
  client: pg.ClientBase,
  deployment: ActiveDeployment,
  batchSize: number,
  sizer: ClaimSizer,
): Promise<unknown[][]> {
  const { rows } = await client.query<unknown[]>({
    ...deployment.sql.claim,
    values: [batchSize, sizer.limit(deployment.id)],
  });
  const queueRows = rows.length > 0 ? Number(rows[0]![deployment.plan.keys.length + 3]) : 0;
  sizer.observe(deployment.id, rows.length, queueRows);
  return rows;
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
    const rows = await claim(client, deployment, batchSize, sizer);
    const claimedAt = performance.now();
    if (rows.length === 0) return { claimed: 0, written: 0, dead: 0, requeued: 0 };
    const { scoredAt, ...written } = await scoreAndWrite(client, deployment, model, rows, claimedAt);
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
