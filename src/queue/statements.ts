import type { Plan } from '../scoring/plan.js';
import { writeBackSql } from '../writeback/sql.js';
import { claimSql, pendingSql } from './claim.js';
import { readLayout, type InputRead } from './read-layout.js';
import { requeueSql } from './requeue.js';

/** The statements that claim, write back and requeue one deployment's rows. */
export interface DeploymentStatements {
  /** See claimSql; $1 batch size in keys, $2 most queue rows to lock. */
  readonly claim: { name: string; text: string; rowMode: 'array' };
  /** How the claim's value columns unpack into values (read-layout.ts). */
  readonly claimLayout: readonly InputRead[];
  /**
   * The write-back's two forms (src/writeback/sql.ts). Prepared (named) for small batches, where
   * planning would cost more than running; planned afresh for large ones, where the cached
   * generic plan ran 5-8 times slower than a custom plan (measured at 1000 rows per batch).
   */
  readonly writeBack: { readonly fast: { name: string; text: string }; readonly careful: { name: string; text: string } };
  readonly requeue: { name: string; text: string };
  /** True when the queue holds a row that is due. */
  readonly pending: string;
  /**
   * Identifies the model version, the plan and the statements built from it. Statement names
   * carry it, so a re-planned deployment (ALTER TABLE ... TYPE, promote) is prepared afresh
   * instead of failing with "cached plan must not change result type"; a Kafka message relayed
   * for another version or plan is not scored (it is queued again, and the worker reloads).
   */
  readonly fingerprint: string;
}

/** Builds (once per deployment and plan) the statements of its queue. */
export function deploymentStatements(deployment: {
  readonly id: number;
  readonly plan: Plan;
  readonly table: string;
  readonly partitioned: boolean;
  /** The version the deployment's model resolves to: a message relayed for another is not scored. */
  readonly model: string;
  readonly version: number;
}): DeploymentStatements {
  const { id, plan, table, partitioned } = deployment;
  const claim = claimSql(id, plan, table);
  const fast = writeBackSql(id, plan, table, partitioned, 'fast');
  const careful = writeBackSql(id, plan, table, partitioned, 'careful');
  const requeue = requeueSql(id, plan);
  const fingerprint = hash(`${deployment.model}@${deployment.version}` + JSON.stringify(plan) + claim + fast + careful + requeue);
  return {
    claim: { name: `pgscore_claim_${id}_${fingerprint}`, text: claim, rowMode: 'array' },
    claimLayout: readLayout(plan),
    writeBack: {
      fast: { name: `pgscore_write_${id}_${fingerprint}`, text: fast },
      careful: { name: `pgscore_careful_${id}_${fingerprint}`, text: careful },
    },
    requeue: { name: `pgscore_requeue_${id}_${fingerprint}`, text: requeue },
    pending: pendingSql(id),
    fingerprint,
  };
}

/** The names a deployment's statements are prepared under (see forgetStaleStatements). */
export function preparedNames(sql: DeploymentStatements): string[] {
  return [sql.claim.name, sql.writeBack.fast.name, sql.writeBack.careful.name, sql.requeue.name];
}

/**
 * The requeue statement of a deployment that is not active (invalid, pending) but keeps its
 * queue: where a Kafka worker parks rows that arrive for it.
 */
export function parkingStatements(deployment: { readonly id: number; readonly plan: Plan }) {
  const text = requeueSql(deployment.id, deployment.plan);
  return {
    keyCount: deployment.plan.keys.length,
    sql: { requeue: { name: `pgscore_park_${deployment.id}_${hash(text)}`, text } },
  };
}

function hash(text: string): string {
  let h = 0;
  for (let i = 0; i < text.length; i++) h = (Math.imul(h, 31) + text.charCodeAt(i)) | 0;
  return (h >>> 0).toString(36);
}
