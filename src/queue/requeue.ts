import type pg from 'pg';
import type { Plan } from '../scoring/plan.js';
import { keyColumns, type ClaimedRow } from './claimed-row.js';
import { queueKeyColumns, queueTable } from './names.js';

/** $1 delay in ms (0: due at once), $2.. key texts per key column: queue these rows again. */
export function requeueSql(deploymentId: number, plan: Plan): string {
  return `
    INSERT INTO ${queueTable(deploymentId)} (pgscore_n, pgscore_not_before, ${queueKeyColumns(plan).join(', ')})
    SELECT count(*), CASE WHEN $1::int > 0 THEN now() + $1::int * interval '1 millisecond' END,
           ${plan.keys.map((k, i) => `array_agg(r.k${i}::${k.type})`).join(', ')}
      FROM unnest(${plan.keys.map((_, i) => `$${i + 2}::text[]`).join(', ')}) AS r(${plan.keys.map((_, i) => `k${i}`).join(', ')})
    HAVING count(*) > 0`;
}

/** Puts rows back on the deployment's queue, due after delayMs; the queue is the truth again. */
export async function requeueRows(
  client: pg.ClientBase,
  deployment: { readonly sql: { readonly requeue: { name: string; text: string } }; readonly keyCount: number },
  rows: readonly Pick<ClaimedRow, 'keys'>[],
  delayMs: number,
): Promise<void> {
  if (rows.length === 0) return;
  await client.query({ ...deployment.sql.requeue, values: [Math.round(delayMs), ...keyColumns(rows, deployment.keyCount)] });
}
