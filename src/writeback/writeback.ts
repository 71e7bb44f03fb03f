import type pg from 'pg';
import { keyColumns, type ClaimedRow } from '../queue/claimed-row.js';
import type { Scored } from '../scoring/score.js';
import { histogram } from '../worker/latency.js';
import type { DeploymentStatements } from '../queue/statements.js';
import type { Plan } from '../scoring/plan.js';
import { arrayLiteral } from '../db/array-literal.js';
import { logsPredictions } from './sql.js';

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

/** The model that scored a group of rows, and its run time per row. */
export interface ScoredBy {
  /** name@version: the provenance column, the batch statistics and the prediction log record it. */
  readonly ref: string;
  readonly scoreUs: number;
}

/** A shadow model's scores of the same rows (into the prediction log only). */
export interface ShadowScores extends ScoredBy {
  readonly scored: Scored;
}

/**
 * One statement, inside the batch's transaction (sql.ts): write predictions (only where the row
 * is still the version that was read), queue again the rows that could not be written, record
 * dead letters, clear old dead letters of rows that now scored, record the batch's statistics,
 * and log predictions (with the shadow's).
 */
export async function writePredictions(
  client: pg.ClientBase,
  deployment: { readonly id: number; readonly sql: DeploymentStatements; readonly keyCount: number; readonly plan: Plan },
  rows: readonly ClaimedRow[],
  scored: Scored,
  /** Milliseconds since the rows were read (added to each row's age for the latency statistics). */
  elapsedMs: number,
  by: ScoredBy,
  shadow?: ShadowScores,
): Promise<WriteResult> {
  const scoredRows = scored.rows.map((r) => rows[r]!);
  const deadRows = scored.rejected.map((r) => rows[r.row]!);
  const values: unknown[] = [
    deployment.id,
    ...keyColumns(scoredRows, deployment.keyCount).map(arrayLiteral),
    arrayLiteral(scoredRows.map((row) => row.xmin)),
    arrayLiteral(scoredRows.map((row) => row.tid)),
    arrayLiteral(scoredRows.map((row) => row.attempts)),
    ...scored.columns.map(arrayLiteral),
    ...keyColumns(deadRows, deployment.keyCount).map(arrayLiteral),
    arrayLiteral(scored.rejected.map((r) => r.reason)),
    arrayLiteral(deadRows.map((row) => row.xmin)),
    arrayLiteral(deadRows.map((row) => row.tid)),
    arrayLiteral(deadRows.map((row) => row.attempts)),
    histogram(scoredRows.map((row) => row.ageMs + elapsedMs)),
    by.ref,
    ...(logsPredictions(deployment.plan) ? [by.scoreUs] : []),
    ...(deployment.plan.shadow ? shadowValues(scored.rows, shadowOf(deployment.plan, shadow), deployment.plan.outputs.length) : []),
  ];
  const { written, dead } = await runWriteBack(client, deployment, rows.length, values);
  const deadReason = dead > 0 ? scored.rejected[0]?.reason : undefined;
  return { written, dead, requeued: scoredRows.length + deadRows.length - written - dead, ...(deadReason ? { deadReason } : {}) };
}

/** How long the fast form may wait for a row lock before the batch is written the careful way. */
const FAST_LOCK_TIMEOUT = '20ms';
const FAST_BEGIN = `SAVEPOINT pgscore_fast; SET LOCAL lock_timeout = '${FAST_LOCK_TIMEOUT}'`;
const FAST_END = 'RELEASE SAVEPOINT pgscore_fast; SET LOCAL lock_timeout TO DEFAULT';
const FAST_UNDO = 'ROLLBACK TO SAVEPOINT pgscore_fast';
/** After a fast write-back met a lock, a deployment's batches take the careful form this long. */
const CAREFUL_FOR_MS = 10_000;
const carefulUntil = new WeakMap<DeploymentStatements, number>();

/**
 * Runs the write-back (sql.ts): for a large batch, the fast form (no lock pass) in a savepoint
 * whose lock_timeout keeps the worker from waiting on an application; when it times out on a row
 * lock, the savepoint is rolled back and the careful form (SKIP LOCKED) writes the batch, and the
 * deployment's next batches for a while. A small batch takes the careful form at once (fewer
 * round trips, which is what its latency is made of). A side table is only appended to: one
 * form serves.
 */
async function runWriteBack(
  client: pg.ClientBase,
  deployment: { readonly sql: DeploymentStatements; readonly plan: Plan },
  rowCount: number,
  values: unknown[],
): Promise<{ written: number; dead: number }> {
  const prepared = rowCount <= PREPARED_UP_TO;
  const run = async (form: { name: string; text: string }) =>
    (await client.query<{ written: number; dead: number }>({ ...(prepared ? form : { text: form.text }), values })).rows[0] ?? { written: 0, dead: 0 };
  const { fast, careful } = deployment.sql.writeBack;
  if (deployment.plan.target) return run(fast);
  // A small batch (live traffic) saves the savepoint's two round trips: its lock pass costs less.
  if (prepared || (carefulUntil.get(deployment.sql) ?? 0) > performance.now()) return run(careful);
  await client.query(FAST_BEGIN);
  try {
    const written = await run(fast);
    await client.query(FAST_END);
    return written;
  } catch (error) {
    if ((error as { code?: string }).code !== LOCK_NOT_AVAILABLE) throw error;
    await client.query(FAST_UNDO);
    carefulUntil.set(deployment.sql, performance.now() + CAREFUL_FOR_MS);
    return run(careful);
  }
}

const LOCK_NOT_AVAILABLE = '55P03';

/** The shadow's scores of a plan with a shadow: scoreBatch always has them (or its failure). */
function shadowOf(plan: Plan, shadow: ShadowScores | undefined): ShadowScores {
  if (!shadow) throw new Error(`the write-back of a plan with shadow ${plan.shadow?.ref} got no shadow scores`);
  return shadow;
}

/**
 * The shadow's parameters, aligned with the live model's scored rows: one array per output (NULL
 * where the shadow failed), the shadow's error per row, its version and run time per row.
 */
function shadowValues(liveRows: readonly number[], shadow: ShadowScores, outputs: number): unknown[] {
  const position = new Map(shadow.scored.rows.map((row, i) => [row, i]));
  const reasons = new Map(shadow.scored.rejected.map((r) => [r.row, r.reason]));
  const columns = Array.from({ length: outputs }, (_, c) =>
    arrayLiteral(liveRows.map((row) => {
      const i = position.get(row);
      return i === undefined ? null : shadow.scored.columns[c]![i];
    })));
  const errors = arrayLiteral(liveRows.map((row) => (position.has(row) ? null : (reasons.get(row) ?? 'the shadow model did not score this row'))));
  return [...columns, errors, shadow.ref, shadow.scoreUs];
}
