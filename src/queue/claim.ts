import pg from 'pg';
import type { Plan } from '../scoring/plan.js';
import type { ClaimedRow } from './claimed-row.js';
import { queueTable } from './names.js';
import { unpackValues, valueColumnsSql, type InputRead } from './read-layout.js';

const q = pg.escapeIdentifier;

/**
 * The claim: lock at most $2 queue rows that are due (SKIP LOCKED; the worker sizes $2 from how
 * many keys a row held lately), take the oldest of them up to $1 keys (at least one row),
 * delete those, and read each key's current inputs with one primary-key lookup, and each range
 * entry's rows (030_generate.sql) with one index range scan. $3 is the
 * version (xmin) of the deployment's row the worker loaded: once ml.promote, ml.split or a
 * schema change re-planned the deployment, the claim takes nothing until the worker reloaded,
 * so no row queued after a promotion is scored by the version before it.
 * Columns: key texts..., age_ms, xmin, ctid, queue rows taken, attempts, input values (see
 * read-layout.ts: one column per source, or one packed array per float input)...; xmin, ctid
 * and values are NULL for a claimed key whose row the worker did not find. A key may come twice
 * (queued by a key and inside a range): decodeClaim keeps the first.
 */
export function claimSql(deploymentId: number, plan: Plan, table: string): string {
  const keys = plan.keys.map((k) => q(k.column));
  const values = valueColumnsSql(plan);
  const keyed = `
    SELECT ${keys.map((k) => `c.${k}::text`).join(', ')},
           (extract(epoch FROM clock_timestamp() - c.pgscore_queued_at) * 1000)::float8,
           s.pgscore_xmin,
           s.pgscore_tid,
           (SELECT count(*) FROM claimed)::int,
           c.pgscore_attempts::int,
           ${values.map((_, i) => `s.pgscore_${i}`).join(', ')}
      FROM claimed_keys c
      -- LATERAL ... LIMIT 1 pins the plan to one primary-key lookup per claimed row, whatever the
      -- statistics of a table that was just bulk-loaded say. A row not found (ctid NULL) was
      -- deleted since, or is hidden from the worker by row-level security (see claimBatch).
      LEFT JOIN LATERAL (${lookupSql(plan, table)}) s ON true`;
  // A last row with NULL keys: the queue rows the claim took and the keys they held (in the
  // attempts column), also when no row came back (every key's row deleted since).
  const taken = `
    UNION ALL
    SELECT ${keys.map(() => 'NULL::text').join(', ')}, NULL::float8, NULL::xid, NULL::tid, count(*)::int, sum(c.pgscore_n)::int,
           ${values.map(() => 'NULL').join(', ')}
      FROM claimed c HAVING count(*) > 0`;
  if (!ranged(plan)) return `${claimKeysCtes(deploymentId, plan, table, 'read')}${keyed}${taken}`;
  const key = q(plan.keys[0]!.column);
  return `${claimKeysCtes(deploymentId, plan, table, 'read')}${keyed}${taken}
    UNION ALL
    SELECT s.pgscore_key::text,
           (extract(epoch FROM clock_timestamp() - c.pgscore_queued_at) * 1000)::float8,
           s.pgscore_xmin,
           s.pgscore_tid,
           (SELECT count(*) FROM claimed)::int,
           c.pgscore_attempts::int,
           ${values.map((_, i) => `s.pgscore_${i}`).join(', ')}
      FROM claimed c
      -- ORDER BY ... LIMIT pins the plan to one index range scan per entry (an entry spans at
      -- most RANGE_SIZE key values), whatever the statistics say.
      JOIN LATERAL (
        SELECT t.${key} AS pgscore_key, t.xmin AS pgscore_xmin, t.ctid AS pgscore_tid, ${values.map((sql, i) => `${sql} AS pgscore_${i}`).join(', ')}
          FROM ${table} t
         WHERE t.${key} BETWEEN c.pgscore_lo AND c.pgscore_hi
         ORDER BY t.${key} LIMIT ${RANGE_SIZE}) s ON true
     WHERE c.pgscore_lo IS NOT NULL AND NOT ${rowSecuritySql(table)}`;
}

/** Key values per range entry (ml._range_size()). */
export const RANGE_SIZE = 500;

/** Whether the deployment's bulk INSERTs queue key ranges (ml._ranged): its key is one integer column. */
export function ranged(plan: Plan): boolean {
  return plan.keys.length === 1 && ['smallint', 'integer', 'bigint'].includes(plan.keys[0]!.type);
}

/** Whether the table is under row-level security now (evaluated once per claim). */
function rowSecuritySql(table: string): string {
  return `(SELECT c.relrowsecurity FROM pg_catalog.pg_class c WHERE c.oid = ${pg.escapeLiteral(table)}::regclass)`;
}

/** One key's row and input values: the claim's lookup, over claimed keys aliased c. */
export function lookupSql(plan: Plan, table: string): string {
  const keys = plan.keys.map((k) => q(k.column));
  const values = valueColumnsSql(plan);
  return `
        SELECT t.xmin AS pgscore_xmin, t.ctid AS pgscore_tid, ${values.map((sql, i) => `${sql} AS pgscore_${i}`).join(', ')}
          FROM ${table} t
         WHERE ${keys.map((k) => `t.${k} = c.${k}`).join(' AND ')}
         LIMIT 1`;
}

/**
 * The claim's first half: lock due queue rows, delete those of the batch and return their keys
 * (claimed_keys: the key columns, pgscore_queued_at, pgscore_attempts). $1 batch size in keys,
 * $2 most queue rows to lock, $3 the deployment row's version the worker loaded.
 * Range entries (claimed.pgscore_lo .. pgscore_hi) add the keys of their rows to claimed_keys,
 * read by ml._range_keys with the installer's rights, when `ranges` is 'keys' (the step-by-step
 * claim), or only under row-level security when it is 'read' (the claim reads the other ranges
 * itself): a row the worker cannot see is then found missing and dead-lettered, never skipped.
 */
export function claimKeysCtes(deploymentId: number, plan: Plan, table: string, ranges: 'keys' | 'read'): string {
  const queue = queueTable(deploymentId);
  const keys = plan.keys.map((k) => q(k.column));
  const queueKeys = plan.keys.map((_, i) => `pgscore_k${i + 1}`);
  const rangeKeys = ranged(plan)
    ? `
        UNION ALL
        SELECT r.k::${plan.keys[0]!.type}, c.pgscore_queued_at, c.pgscore_attempts
          FROM claimed c, ml._range_keys(${deploymentId}, c.pgscore_lo, c.pgscore_hi) r(k)
         WHERE c.pgscore_lo IS NOT NULL${ranges === 'read' ? ` AND ${rowSecuritySql(table)}` : ''}`
    : '';
  return `
    WITH locked AS MATERIALIZED (
      SELECT ctid AS tid, pgscore_n, pgscore_priority, pgscore_seq FROM ${queue}
       WHERE (pgscore_not_before IS NULL OR pgscore_not_before <= now())
         AND (SELECT d.xmin FROM ml._deployments d WHERE d.id = ${deploymentId}) = $3::xid
       ORDER BY pgscore_priority, pgscore_seq LIMIT $2 FOR UPDATE SKIP LOCKED
    ), picked AS (
      SELECT tid FROM (
        SELECT tid, sum(pgscore_n) OVER (ORDER BY pgscore_priority, pgscore_seq) - pgscore_n AS before FROM locked) l
       WHERE before < $1
    ), claimed AS (
      -- By ctid: a TID scan, whatever the planner believes about a queue that just grew.
      DELETE FROM ${queue} q WHERE q.ctid = ANY (ARRAY(SELECT tid FROM picked))
      RETURNING ${queueKeys.map((k) => `q.${k}`).join(', ')}, q.pgscore_queued_at, q.pgscore_attempts, q.pgscore_lo, q.pgscore_hi, q.pgscore_n
    ), claimed_keys AS (
      SELECT ${keys.map((k) => `u.${k}`).join(', ')}, min(u.pgscore_queued_at) AS pgscore_queued_at,
             max(u.pgscore_attempts) AS pgscore_attempts
        FROM (
        SELECT ${keys.map((k) => `u.${k}`).join(', ')}, c.pgscore_queued_at, c.pgscore_attempts
          FROM claimed c, unnest(${queueKeys.map((k) => `c.${k}`).join(', ')}) AS u(${keys.join(', ')})${rangeKeys}) u
       GROUP BY ${keys.map((k) => `u.${k}`).join(', ')}
    )`;
}

export interface Claimed {
  readonly rows: ClaimedRow[];
  /** Key texts of claimed keys whose row the worker did not find (deleted, or hidden by RLS). */
  readonly notFound: string[][];
  /** Queue rows the claim took (a queue row holds 1 to 100 keys, or a range of 500 key values). */
  readonly queueRows: number;
  /** Keys those queue rows held (their pgscore_n), found or not. */
  readonly keys: number;
}

/** Decodes the claim's rows (array mode) into named rows, with values in plan source order. */
export function decodeClaim(raw: readonly (readonly unknown[])[], keyCount: number, layout: readonly InputRead[]): Claimed {
  const rows: ClaimedRow[] = [];
  const notFound: string[][] = [];
  const seen = new Set<string>();
  let taken = { queueRows: 0, keys: 0 };
  for (const row of raw) {
    const keys = row.slice(0, keyCount) as string[];
    if (keys[0] === null) {
      taken = { queueRows: Number(row[keyCount + 3]), keys: Number(row[keyCount + 4]) };
      continue;
    }
    if (row[keyCount + 2] === null) {
      notFound.push(keys);
      continue;
    }
    const id = JSON.stringify(keys);
    if (seen.has(id)) continue;
    seen.add(id);
    rows.push({
      keys,
      ageMs: row[keyCount] as number,
      xmin: String(row[keyCount + 1]),
      tid: String(row[keyCount + 2]),
      attempts: row[keyCount + 4] as number,
      values: unpackValues(layout, row.slice(keyCount + 5)),
    });
  }
  return {
    rows,
    // A key queued alone whose row a range entry of the same claim read was found.
    notFound: notFound.filter((keys) => !seen.has(JSON.stringify(keys))),
    ...taken,
  };
}

/**
 * A claimed key the worker did not find was deleted since, or its row is hidden from the worker
 * by row-level security. The second must not vanish in silence: ml._dead_letter_unseen looks the
 * keys up with the schema owner's rights and records a dead letter naming RLS for each row that
 * exists. Runs only when keys are missing, in the claim's transaction.
 */
export const DEAD_LETTER_UNSEEN = 'SELECT ml._dead_letter_unseen($1, $2::jsonb) AS dead';

/**
 * How many queue rows to lock for a batch of `batchSize` keys. A queue row holds one key (a
 * single-row write) up to 100 (a chunk of a bulk statement); locking far more rows than a
 * batch takes would keep the other lanes from them, so the limit follows what rows held lately.
 */
export class ClaimSizer {
  readonly #keysPerRow = new Map<number, number>();

  constructor(private readonly batchSize: number) {}

  limit(deploymentId: number): number {
    // Until a claim showed it, guess between single-row writes (1) and bulk chunks (100): locking
    // batchSize rows of 100-key chunks would hold a whole bulk backlog away from the other lanes.
    const perRow = this.#keysPerRow.get(deploymentId) ?? 10;
    return Math.max(1, Math.min(this.batchSize, Math.ceil(this.batchSize / perRow)));
  }

  observe(deploymentId: number, keys: number, queueRows: number): void {
    if (queueRows > 0) this.#keysPerRow.set(deploymentId, keys / queueRows);
  }
}

/** True when the queue holds a row that is due. */
export function pendingSql(deploymentId: number): string {
  return `SELECT EXISTS (SELECT 1 FROM ${queueTable(deploymentId)} WHERE pgscore_not_before IS NULL OR pgscore_not_before <= now())`;
}

/**
 * Claims a batch (see claimSql) in the caller's transaction and tells the sizer what it got.
 * `missing` counts queued keys the claim took whose row did not come back (deleted since, or
 * dead-lettered as hidden by row-level security, or counted twice): the claim took queue rows, so
 * the queue may hold more, even when no row came back.
 */
export async function claimBatch(
  client: pg.ClientBase,
  deployment: {
    readonly id: number;
    readonly keyCount: number;
    readonly rowVersion: string;
    readonly sql: { readonly claim: pg.QueryArrayConfig & { name: string }; readonly claimLayout: readonly InputRead[] };
  },
  batchSize: number,
  sizer: ClaimSizer,
): Promise<{ rows: ClaimedRow[]; missing: number }> {
  const { rows: raw } = await client.query<unknown[]>({
    ...deployment.sql.claim,
    values: [batchSize, sizer.limit(deployment.id), deployment.rowVersion],
  });
  const { rows, notFound, queueRows, keys } = decodeClaim(raw, deployment.keyCount, deployment.sql.claimLayout);
  sizer.observe(deployment.id, keys, queueRows);
  if (notFound.length > 0) await client.query(DEAD_LETTER_UNSEEN, [deployment.id, JSON.stringify(notFound)]);
  return { rows, missing: Math.max(0, keys - rows.length) };
}
