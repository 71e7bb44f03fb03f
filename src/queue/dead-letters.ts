import pg from 'pg';
import type { Plan } from '../scoring/plan.js';
import { keyColumns } from './claimed-row.js';

/** A queued row that cannot be scored, and why (in words a person can act on). */
export interface DeadRow {
  readonly keys: readonly string[];
  readonly reason: string;
}

/**
 * $1 deployment id, $2.. key texts per key column, then the reasons: records dead letters (a row
 * already dead gets the new reason and one more attempt), as the write-back records the rows the
 * model rejects.
 */
export function deadLettersSql(plan: Plan): string {
  const n = plan.keys.length;
  const rowKey = `jsonb_build_object(${plan.keys.map((k, i) => `${pg.escapeLiteral(k.column)}, b.k${i}::${k.type}`).join(', ')})`;
  return `
    INSERT INTO ml._dead_letters AS e (deployment_id, row_key, reason)
    SELECT $1, ${rowKey}, b.reason
      FROM unnest(${plan.keys.map((_, i) => `$${i + 2}::text[]`).join(', ')}, $${n + 2}::text[])
           AS b(${plan.keys.map((_, i) => `k${i}`).join(', ')}, reason)
    ON CONFLICT (deployment_id, row_key)
    DO UPDATE SET reason = excluded.reason, attempts = e.attempts + 1, last_seen = now()`;
}

export async function recordDeadLetters(
  client: pg.ClientBase,
  deployment: { readonly id: number; readonly plan: Plan; readonly keyCount: number },
  dead: readonly DeadRow[],
): Promise<void> {
  if (dead.length === 0) return;
  await client.query({
    text: deadLettersSql(deployment.plan),
    values: [deployment.id, ...keyColumns(dead, deployment.keyCount), dead.map((row) => row.reason)],
  });
}
