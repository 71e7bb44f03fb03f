import pg from 'pg';
import type { Plan } from '../scoring/plan.js';

const q = pg.escapeIdentifier;

/** The queue of a deployment (sql/functions/030_generate.sql). */
export function queueTable(deploymentId: number): string {
  return `ml.${q(`_queue_${deploymentId}`)}`;
}

/** The queue's key columns, pgscore_k1.., in the plan's key order. */
export function queueKeyColumns(plan: Plan): string[] {
  return plan.keys.map((_, i) => `pgscore_k${i + 1}`);
}

