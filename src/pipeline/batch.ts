import type pg from 'pg';
import { BEGIN_WRITEBACK, BEGIN_WRITEBACK_REDOABLE, INVALIDATE_UNWRITABLE } from '../db/statements.js';
import { isConnectionError, ModelError } from '../errors.js';
import { groupByVariant } from '../lifecycle/variants.js';
import type { LoadedModel } from '../models/sessions.js';
import { claimBatch, type ClaimSizer } from '../queue/claim.js';
import { claimIsolated } from '../queue/isolated-claim.js';
import type { ClaimedRow } from '../queue/claimed-row.js';
import type { ModelVersion, Plan } from '../scoring/plan.js';
import { scoreRows, type Scored } from '../scoring/score.js';
import type { RateLimitedLog } from '../log-limit.js';
import type { ActiveDeployment } from '../worker/deployments.js';
import { writePredictionsIsolated } from '../writeback/isolated.js';
import { writePredictions, type ShadowScores, type WriteResult } from '../writeback/writeback.js';
import { isTableFailure, isWriteRowFailure, UnwritableTableError } from './row-failure.js';

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
 * pooled connection; a connection that failed is not given back to the pool. A redoable
 * transaction (one a crash may lose, because losing it leaves its rows queued) commits without
 * waiting for the WAL flush (see BEGIN_WRITEBACK_REDOABLE).
 */
export async function inWritebackTransaction<T>(
  pool: pg.Pool,
  body: (client: pg.PoolClient) => Promise<T>,
  durability: 'durable' | 'redoable' = 'durable',
): Promise<T> {
  const client = await pool.connect();
  let failure: unknown;
  try {
    await client.query(durability === 'redoable' ? BEGIN_WRITEBACK_REDOABLE : BEGIN_WRITEBACK);
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

/** Where a batch gets its sessions (SessionCache). */
export interface ModelSource {
  get(name: string, version: number): Promise<LoadedModel>;
}

/** Sees every scored group of rows (the drift recorder, src/monitoring/drift.ts). */
export interface BatchObserver {
  observe(deploymentId: number, plan: Plan, ref: string, rows: readonly ClaimedRow[], scored: Scored): void;
}

/**
 * The batch pipeline both transports run, inside the caller's transaction. Rows are grouped by
 * the version that scores them (one, or a split's variants), each group is scored with one
 * session.run (and by the shadow model, when there is one), then its predictions, dead letters,
 * statistics and log entries are written with one statement. Every live model is loaded before
 * anything is written: one that does not load throws a ModelError (the failure policy pauses the
 * deployment). A shadow that does not load fails only its own log entries.
 */
export async function scoreBatch(
  client: pg.ClientBase,
  deployment: ActiveDeployment,
  models: ModelSource,
  rows: readonly ClaimedRow[],
  readAt: number,
  observer?: BatchObserver,
  /** Write in savepoints, splitting on a row the table refuses (after a batch failed on one). */
  isolate = false,
): Promise<WriteResult & { scoredAt: number }> {
  const { plan } = deployment;
  const groups = groupByVariant(plan, deployment.own, rows);
  const loaded = await Promise.all(groups.map((group) => models.get(group.version.model, group.version.version)));
  const shadow = plan.shadow ? await loadShadow(models, plan.shadow) : undefined;

  let total: WriteResult = { written: 0, dead: 0, requeued: 0 };
  let scoredAt = readAt;
  for (const [i, group] of groups.entries()) {
    const values = group.rows.map((row) => row.values);
    const started = performance.now();
    const scored = await scoreRows(loaded[i]!, plan, values);
    const scoreUs = ((performance.now() - started) * 1000) / group.rows.length;
    observer?.observe(deployment.id, plan, group.version.ref, group.rows, scored);
    const shadowScores = shadow ? await scoreShadow(shadow, plan, values) : undefined;
    scoredAt = performance.now();
    const write = isolate ? writePredictionsIsolated : writePredictions;
    const result = await write(client, deployment, group.rows, scored, scoredAt - readAt,
      { ref: group.version.ref, scoreUs }, shadowScores);
    total = {
      written: total.written + result.written,
      dead: total.dead + result.dead,
      requeued: total.requeued + result.requeued,
      ...((total.deadReason ?? result.deadReason) ? { deadReason: (total.deadReason ?? result.deadReason)! } : {}),
    };
  }
  return { ...total, scoredAt };
}

type Shadow = { readonly ref: string; readonly model?: LoadedModel; readonly error?: string };

async function loadShadow(models: ModelSource, version: ModelVersion): Promise<Shadow> {
  try {
    return { ref: version.ref, model: await models.get(version.model, version.version) };
  } catch (error) {
    if (!(error instanceof ModelError)) throw error;
    return { ref: version.ref, error: error.message };
  }
}

async function scoreShadow(shadow: Shadow, plan: Plan, values: readonly (readonly unknown[])[]): Promise<ShadowScores> {
  if (!shadow.model) {
    const reason = `shadow model cannot be loaded: ${shadow.error}`;
    return { ref: shadow.ref, scoreUs: 0, scored: { rows: [], columns: [], rejected: values.map((_, row) => ({ row, reason })) } };
  }
  const started = performance.now();
  const scored = await scoreRows(shadow.model, plan, values);
  return { ref: shadow.ref, scoreUs: ((performance.now() - started) * 1000) / values.length, scored };
}

/**
 * The notify transport's batch, in one transaction: claim queued rows (SKIP LOCKED) with their
 * current inputs, score them, write predictions and dead letters, delete the queue rows,
 * commit. A crash at any point before the commit, or one that loses the commit (it does not
 * wait for the WAL flush), leaves the rows queued.
 */
export async function claimAndScore(
  pool: pg.Pool,
  deployment: ActiveDeployment,
  models: ModelSource,
  batchSize: number,
  sizer: ClaimSizer,
  observer?: BatchObserver,
): Promise<BatchResult> {
  try {
    return await claimAndScoreOnce(pool, deployment, models, batchSize, sizer, observer, false);
  } catch (error) {
    if (!isWriteRowFailure(error) && !isTableFailure(error)) throw error;
  }
  // A row's values or its write failed the batch (nothing of it committed): claim again, one
  // step at a time, so that the failing rows become dead letters and the others are scored.
  try {
    return await claimAndScoreOnce(pool, deployment, models, batchSize, sizer, observer, true);
  } catch (error) {
    if (!(error instanceof UnwritableTableError)) throw error;
    await pool.query(INVALIDATE_UNWRITABLE, [deployment.id, error.message]);
    return { deployment: deployment.name, claimed: 0, written: 0, dead: 0, requeued: 0, ms: 0 };
  }
}

async function claimAndScoreOnce(
  pool: pg.Pool,
  deployment: ActiveDeployment,
  models: ModelSource,
  batchSize: number,
  sizer: ClaimSizer,
  observer: BatchObserver | undefined,
  isolate: boolean,
): Promise<BatchResult> {
  const started = performance.now();
  let timing = { claimedAt: started, scoredAt: started };
  const result = await inWritebackTransaction(pool, async (client) => {
    let unreadable: { dead: number; deadReason?: string } = { dead: 0 };
    let rows: ClaimedRow[];
    let missing: number;
    if (isolate) {
      const claimed = await claimIsolated(client, deployment, batchSize, sizer);
      ({ rows, missing } = claimed);
      unreadable = { dead: claimed.dead.length, ...(claimed.dead[0] ? { deadReason: claimed.dead[0].reason } : {}) };
    } else {
      ({ rows, missing } = await claimBatch(client, deployment, batchSize, sizer));
    }
    const claimedAt = performance.now();
    // Keys whose row is gone count as claimed: the claim took their queue rows, and the worker
    // must look again rather than take the queue for empty (the generated suite's F14: a deleted
    // bulk load was worked off one queue row per safety poll).
    if (rows.length === 0) return { claimed: unreadable.dead + missing, written: 0, requeued: 0, ...unreadable };
    const { scoredAt, ...written } = await scoreBatch(client, deployment, models, rows, claimedAt, observer, isolate);
    timing = { claimedAt, scoredAt };
    const deadReason = unreadable.deadReason ?? written.deadReason;
    return { claimed: rows.length + unreadable.dead + missing, ...written, dead: written.dead + unreadable.dead, ...(deadReason ? { deadReason } : {}) };
  }, 'redoable');
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
