import Table from 'cli-table3';
import type pg from 'pg';

export interface StatusRow {
  deployment: string;
  model: string;
  state: string;
  pending: string | null;
  oldest_pending_age: string | null;
  scored_last_minute: string;
  latency_p50_ms: number | null;
  latency_p99_ms: number | null;
  dead_letters: string;
  in_kafka: string | null;
  versions_in_use: string[];
}

export async function readStatus(db: pg.Pool): Promise<StatusRow[]> {
  const { rows } = await db.query<StatusRow>(`
    SELECT deployment, model, state, pending, oldest_pending_age::text AS oldest_pending_age,
           scored_last_minute, latency_p50_ms, latency_p99_ms, dead_letters, in_kafka, versions_in_use
      FROM ml.status`);
  return rows;
}

/** ml.status as a table for a terminal. */
export function formatStatus(rows: readonly StatusRow[]): string {
  if (rows.length === 0) return 'no deployments (see ml.deploy in README.md)';
  const kafka = rows.some((row) => row.in_kafka !== null);
  const table = new Table({
    head: ['deployment', 'model', 'state', 'pending', 'oldest pending', 'scored/min', 'p50 ms', 'p99 ms', 'dead letters', ...(kafka ? ['in kafka'] : [])],
    style: { head: [], border: [] },
  });
  for (const row of rows) {
    table.push([
      row.deployment,
      row.model,
      row.state,
      row.pending ?? '-',
      row.oldest_pending_age ?? '-',
      row.scored_last_minute,
      row.latency_p50_ms ?? '-',
      row.latency_p99_ms ?? '-',
      row.dead_letters,
      ...(kafka ? [row.in_kafka ?? '-'] : []),
    ]);
  }
  return table.toString();
}
