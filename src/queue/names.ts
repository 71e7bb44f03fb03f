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

/**
 * SQL of each input value, over the table aliased t. Expressions were checked at deploy (one
 * expression, pg_catalog functions, no subqueries) and run under search_path pg_catalog, pg_temp.
 */
export function sourceValueSql(plan: Plan): string[] {
  return plan.inputs.flatMap((input) =>
    input.sources.map((source) => {
      const value = 'column' in source ? `t.${q(source.column)}` : `(${source.expr})`;
      return input.type === 'string' ? `(${value})::text` : value;
    }),
  );
}
