import pg from 'pg';
import { isRowFailure } from '../pipeline/row-failure.js';
import type { Plan } from '../scoring/plan.js';
import type { ClaimSizer } from './claim.js';
import { claimKeysCtes, DEAD_LETTER_UNSEEN, lookupSql } from './claim.js';
import { keyColumns, type ClaimedRow } from './claimed-row.js';
import { recordDeadLetters, type DeadRow } from './dead-letters.js';
import { requeueRows } from './requeue.js';
import { unpackValues, type InputRead } from './read-layout.js';

const q = pg.escapeIdentifier;

/**
 * The claim in two steps, for a batch whose one-statement claim failed on a row's values (an
 * input expression that throws: a cast of 'abc', a division by zero, a function that raises).
 * First the queue rows and their keys are taken, as the claim takes them; then the inputs are
 * read in savepoints, a failing read split in halves until each failing row is found. Each such
 * row becomes a dead letter with the database's reason, naming the expression; the others are
 * scored as usual. Only batches after a failure pay for this (a savepoint per read).
 */
export async function claimIsolated(
  client: pg.ClientBase,
  deployment: {
    readonly id: number;
    readonly plan: Plan;
    readonly table: string;
    readonly keyCount: number;
    readonly rowVersion: string;
    readonly sql: { readonly claimLayout: readonly InputRead[]; readonly requeue: { name: string; text: string } };
  },
  batchSize: number,
  sizer: ClaimSizer,
): Promise<{ rows: ClaimedRow[]; dead: DeadRow[]; missing: number }> {
  const { plan, keyCount } = deployment;
  const keys = plan.keys.map((k) => q(k.column));
  const { rows: claimed } = await client.query<unknown[]>({
    text: `${claimKeysCtes(deployment.id, plan, deployment.table, 'keys')}
      SELECT ${keys.map((k) => `c.${k}::text`).join(', ')},
             (extract(epoch FROM clock_timestamp() - c.pgscore_queued_at) * 1000)::float8,
             (SELECT count(*) FROM claimed)::int,
             c.pgscore_attempts::int
        FROM claimed_keys c`,
    values: [batchSize, sizer.limit(deployment.id), deployment.rowVersion],
    rowMode: 'array',
  });
  sizer.observe(deployment.id, claimed.length, claimed.length > 0 ? Number(claimed[0]![keyCount + 1]) : 0);
  const queued = claimed.map((row) => ({
    keys: row.slice(0, keyCount) as string[],
    ageMs: row[keyCount] as number,
    attempts: row[keyCount + 2] as number,
  }));

  const rows: ClaimedRow[] = [];
  const dead: DeadRow[] = [];
  const retry: (typeof queued)[number][] = [];
  const read = async (part: typeof queued, locked = false): Promise<void> => {
    if (part.length === 0) return;
    await client.query('SAVEPOINT pgscore_read');
    try {
      const { rows: raw } = await client.query<unknown[]>({ text: readSql(plan, deployment.table), values: keyColumns(part, keyCount), rowMode: 'array' });
      await client.query('RELEASE SAVEPOINT pgscore_read');
      const byKey = new Map(part.map((row) => [JSON.stringify(row.keys), row]));
      for (const r of raw) {
        const keyTexts = r.slice(0, keyCount) as string[];
        const queuedRow = byKey.get(JSON.stringify(keyTexts))!;
        rows.push({
          keys: keyTexts,
          ageMs: queuedRow.ageMs,
          attempts: queuedRow.attempts,
          xmin: String(r[keyCount]),
          tid: String(r[keyCount + 1]),
          values: unpackValues(deployment.sql.claimLayout, r.slice(keyCount + 2)),
        });
      }
    } catch (error) {
      await client.query('ROLLBACK TO SAVEPOINT pgscore_read');
      await client.query('RELEASE SAVEPOINT pgscore_read');
      if (!isRowFailure(error)) throw error;
      if (part.length === 1 && locked) {
        dead.push({ keys: part[0]!.keys, reason: await failingSource(client, plan, deployment.table, part[0]!.keys, error) });
        return;
      }
      if (part.length === 1) {
        // Newest wins for dead letters too: the failing row's current version is share-locked
        // until the batch commits (an application's fix waits for the commit, then queues the
        // row again) and read once more; the dead letter is that version's. A row locked by
        // someone else goes back to the queue.
        if (await lockRow(client, plan, deployment.table, part[0]!.keys)) await read(part, true);
        else retry.push(part[0]!);
        return;
      }
      const half = Math.ceil(part.length / 2);
      await read(part.slice(0, half));
      await read(part.slice(half));
    }
  };
  await read(queued);
  await recordDeadLetters(client, deployment, dead);
  await requeueRows(client, deployment, retry, RETRY_LOCKED_AFTER_MS);
  // Keys whose row was not found: deleted since, or hidden by row-level security (claimBatch).
  const seen = new Set([...rows, ...dead, ...retry].map((row) => JSON.stringify(row.keys)));
  const notFound = queued.filter((row) => !seen.has(JSON.stringify(row.keys))).map((row) => row.keys);
  if (notFound.length > 0) await client.query(DEAD_LETTER_UNSEEN, [deployment.id, JSON.stringify(notFound)]);
  return { rows, dead, missing: notFound.length };
}

/** A row locked by someone else when its inputs failed is tried again after this. */
const RETRY_LOCKED_AFTER_MS = 1_000;

/**
 * Share-locks a row's current version (not waiting: false when someone else holds it). A side
 * table's source is only read by the worker, which may not lock it: there the version is not
 * held, only read again.
 */
async function lockRow(client: pg.ClientBase, plan: Plan, table: string, keys: readonly string[]): Promise<boolean> {
  const where = plan.keys.map((k, i) => `t.${q(k.column)} = $${i + 1}::${k.type}`).join(' AND ');
  const { rowCount } = await client.query({
    text: `SELECT 1 FROM ${table} t WHERE ${where}${plan.target ? '' : ' FOR SHARE OF t SKIP LOCKED'}`,
    values: [...keys],
  });
  return (rowCount ?? 0) > 0;
}

/** The claim's lookup for given keys ($1.. key texts per key column): keys as text, xmin, ctid, values. */
function readSql(plan: Plan, table: string): string {
  const keys = plan.keys.map((k) => q(k.column));
  return `
    SELECT ${keys.map((k) => `c.${k}::text`).join(', ')}, s.*
      FROM (SELECT ${plan.keys.map((k, i) => `u.k${i}::${k.type} AS ${q(k.column)}`).join(', ')}
              FROM unnest(${plan.keys.map((_, i) => `$${i + 1}::text[]`).join(', ')}) AS u(${plan.keys.map((_, i) => `k${i}`).join(', ')})) c
      JOIN LATERAL (${lookupSql(plan, table)}) s ON true`;
}

/**
 * The reason of a row whose inputs cannot be read: each expression is evaluated on its own (in a
 * savepoint) to name the one that fails, with the database's message.
 */
async function failingSource(client: pg.ClientBase, plan: Plan, table: string, keys: readonly string[], error: unknown): Promise<string> {
  const where = plan.keys.map((k, i) => `t.${q(k.column)} = $${i + 1}::${k.type}`).join(' AND ');
  for (const input of plan.inputs) {
    for (const source of input.sources) {
      if (!('expr' in source)) continue;
      await client.query('SAVEPOINT pgscore_source');
      try {
        await client.query({ text: `SELECT (${source.expr})::text FROM ${table} t WHERE ${where}`, values: [...keys] });
        await client.query('RELEASE SAVEPOINT pgscore_source');
      } catch (sourceError) {
        await client.query('ROLLBACK TO SAVEPOINT pgscore_source');
        await client.query('RELEASE SAVEPOINT pgscore_source');
        if (!isRowFailure(sourceError)) throw sourceError;
        return `model input ${input.name}: ${source.label} failed: ${(sourceError as Error).message}`;
      }
    }
  }
  return `the row's inputs cannot be read: ${(error as Error).message}`;
}
