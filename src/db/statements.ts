import pg from 'pg';
import { z } from 'zod';
import { planSchema, type Plan } from '../scoring/plan.js';
import { signatureSchema, type Signature } from '../models/signature.js';

/**
 * Every SQL statement the worker sends. Identifiers are quoted with pg.escapeIdentifier; values
 * travel as parameters. Per-deployment statements are built once per deployment and prepared
 * (named) on each connection.
 */

const q = pg.escapeIdentifier;

/** The worker's write-back transaction: its own writes must not queue rows again (see the triggers). */
export const BEGIN_WRITEBACK = "BEGIN; SET LOCAL pgscore.writeback = 'on'";

/** Advisory lock (1885827939 = 'pgsc', 1): held by a worker while it sleeps; see sql/functions/030_deploy.sql. */
export const TRY_IDLE_LOCK = 'SELECT pg_try_advisory_lock(1885827939, 1) AS locked';
export const RELEASE_IDLE_LOCK = 'SELECT pg_advisory_unlock(1885827939, 1)';

export interface DeploymentRow {
  readonly id: number;
  readonly name: string;
  readonly model: string;
  readonly version: number;
  readonly table: string;
  readonly plan: Plan;
}

const deploymentRow = z.object({
  id: z.number(),
  name: z.string(),
  model: z.string(),
  version: z.number(),
  schema: z.string(),
  relname: z.string(),
  plan: planSchema,
});

export async function listActiveDeployments(db: pg.ClientBase | pg.Pool): Promise<DeploymentRow[]> {
  const { rows } = await db.query(`
    SELECT d.id, d.name, d.model, ml._resolve_version(d.model, d.version, d.alias) AS version,
           n.nspname AS schema, c.relname, d.plan
      FROM ml._deployments d
      JOIN pg_class c ON c.oid = d.source
      JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE d.status = 'active'
     ORDER BY d.id`);
  return rows.map((row) => {
    const parsed = deploymentRow.parse(row);
    return { ...parsed, table: `${q(parsed.schema)}.${q(parsed.relname)}` };
  });
}

export async function fetchModelBytes(db: pg.Pool, name: string, version: number): Promise<Uint8Array> {
  const { rows } = await db.query<{ onnx: Buffer }>('SELECT onnx FROM ml._models WHERE name = $1 AND version = $2', [
    name,
    version,
  ]);
  const row = rows[0];
  if (!row) throw new Error(`model ${name}@${version} does not exist`);
  return row.onnx;
}

/** Models registered with plain SQL whose signature no worker has read yet. */
export async function listUnvalidatedModels(db: pg.Pool): Promise<{ name: string; version: number }[]> {
  const { rows } = await db.query<{ name: string; version: number }>(
    'SELECT name, version FROM ml._models WHERE signature IS NULL AND load_error IS NULL ORDER BY name, version',
  );
  return rows;
}

export async function recordSignature(
  db: pg.ClientBase | pg.Pool,
  model: { name: string; version: number },
  outcome: { signature: Signature } | { error: string },
): Promise<void> {
  const signature = 'signature' in outcome ? JSON.stringify(signatureSchema.parse(outcome.signature)) : null;
  const error = 'error' in outcome ? outcome.error : null;
  await db.query('SELECT ml._record_signature($1, $2, $3::jsonb, $4)', [model.name, model.version, signature, error]);
}

/** Removes scoring statistics older than an hour (ml.status looks at the last minute). */
export const TRIM_BATCH_STATS = "DELETE FROM ml._batches WHERE finished_at < now() - interval '1 hour'";

export interface DeploymentSql {
  /**
   * $1 = batch size in keys, $2 = most queue rows to lock. Returns rows
   * [key texts..., age_ms, xmin, ctid, queue rows taken, source values...].
   */
  readonly claim: pg.QueryArrayConfig & { name: string };
  /** Index of the first source value in a claimed row. */
  readonly firstValue: number;
  /**
   * Prepared (named) for small batches, where planning would cost more than running; planned
   * afresh for large ones, where the cached generic plan ran 5-8 times slower than a custom plan
   * (measured at 1000 rows per batch).
   */
  readonly writeBack: { name: string; text: string };
  /** True when the queue holds at least one row. */
  readonly pending: string;
  /** $1.. key texts: queue these rows again (their Kafka message no longer fits the plan). */
  readonly requeue: { name: string; text: string };
  /** Identifies the claim layout; a Kafka message built for another layout is not scored. */
  readonly fingerprint: string;
}

/** Builds (once per deployment) the statements that claim, read and write back its rows. */
export function deploymentSql(deployment: DeploymentRow): DeploymentSql {
  const { plan, id, table } = deployment;
  const queue = `ml.${q(`_queue_${id}`)}`;
  const keys = plan.keys.map((k) => q(k.column));
  const keyCount = plan.keys.length;

  const sourceSql = plan.inputs.flatMap((input) =>
    input.sources.map((source) => {
      const value = 'column' in source ? `t.${q(source.column)}` : `(${source.expr})`;
      return input.type === 'string' ? `(${value})::text` : value;
    }),
  );
  // Lock at most $2 queue rows (the worker sizes $2 from how many keys a row held lately), take
  // the oldest of them up to $1 keys (at least one row), and delete those.
  const claimText = `
    WITH locked AS MATERIALIZED (
      SELECT ctid AS tid, pgscore_n, pgscore_priority, pgscore_seq FROM ${queue}
       ORDER BY pgscore_priority, pgscore_seq LIMIT $2 FOR UPDATE SKIP LOCKED
    ), picked AS (
      SELECT tid FROM (
        SELECT tid, sum(pgscore_n) OVER (ORDER BY pgscore_priority, pgscore_seq) - pgscore_n AS before FROM locked) l
       WHERE before < $1
    ), claimed AS (
      -- By ctid: a TID scan, whatever the planner believes about a queue that just grew.
      DELETE FROM ${queue} q WHERE q.ctid = ANY (ARRAY(SELECT tid FROM picked))
      RETURNING ${keys.map((k) => `q.${k}`).join(', ')}, q.pgscore_queued_at
    ), claimed_keys AS (
      SELECT ${keys.map((k) => `u.${k}`).join(', ')}, min(c.pgscore_queued_at) AS pgscore_queued_at
        FROM claimed c, unnest(${keys.map((k) => `c.${k}`).join(', ')}) AS u(${keys.join(', ')})
       GROUP BY ${keys.map((k) => `u.${k}`).join(', ')}
    )
    SELECT ${keys.map((k) => `c.${k}::text`).join(', ')},
           (extract(epoch FROM clock_timestamp() - c.pgscore_queued_at) * 1000)::float8,
           s.pgscore_xmin,
           s.pgscore_tid,
           (SELECT count(*) FROM claimed)::int,
           ${sourceSql.map((_, i) => `s.pgscore_${i}`).join(', ')}
      FROM claimed_keys c
      -- LATERAL ... LIMIT 1 pins the plan to one primary-key lookup per claimed row, whatever the
      -- statistics of a table that was just bulk-loaded say.
      JOIN LATERAL (
        SELECT t.xmin AS pgscore_xmin, t.ctid AS pgscore_tid, ${sourceSql.map((sql, i) => `${sql} AS pgscore_${i}`).join(', ')}
          FROM ${table} t
         WHERE ${keys.map((k) => `t.${k} = c.${k}`).join(' AND ')}
         LIMIT 1) s ON true`;

  // Parameters: $1 deployment id, $2.. key texts, then xmins, outputs, dead-letter keys and reasons, histogram.
  let n = 1;
  const param = () => `$${++n}`;
  const keyParams = plan.keys.map(() => param());
  const xminParam = param();
  const tidParam = param();
  const outputParams = plan.outputs.map(() => param());
  const deadKeyParams = plan.keys.map(() => param());
  const reasonParam = param();
  const histogramParam = param();
  const castKey = (alias: string, i: number) => `${alias}.k${i}::${plan.keys[i]!.type}`;
  const rowKey = (alias: string) =>
    `jsonb_build_object(${plan.keys.map((k, i) => `${pg.escapeLiteral(k.column)}, ${castKey(alias, i)}`).join(', ')})`;
  const keyCols = plan.keys.map((_, i) => `k${i}`);
  const outputType = (i: number) => (plan.outputs[i]!.array ? 'text' : plan.outputs[i]!.sql_type);

  const writeBackText = `
    WITH u AS (
      SELECT * FROM unnest(${keyParams.map((p) => `${p}::text[]`).join(', ')}, ${xminParam}::xid[], ${tidParam}::tid[],
                           ${outputParams.map((p, i) => `${p}::${outputType(i)}[]`).join(', ')})
             AS u(${keyCols.join(', ')}, x, tid, ${plan.outputs.map((_, i) => `o${i}`).join(', ')})
    ), locked AS (
      -- The worker never waits for a row lock (so it can never deadlock with an application's
      -- multi-row UPDATE): rows locked by someone else are skipped and queued again.
      -- ARRAY(SELECT …) keeps this a TID scan: with the array as a constant the planner may
      -- prefer to scan a mid-sized table.
      SELECT t.ctid AS tid FROM ${table} t WHERE t.ctid = ANY (ARRAY(SELECT tid FROM u)) FOR NO KEY UPDATE OF t SKIP LOCKED
    ), written AS (
      -- Newest wins: only the row version that was read (ctid and xmin) takes the prediction; a
      -- row changed since keeps its newer state and is queued again.
      UPDATE ${table} t
         SET ${plan.outputs.map((o, i) => `${q(o.column)} = u.o${i}${o.array ? `::${o.sql_type}` : ''}`).join(', ')}
        FROM u
       WHERE t.ctid = u.tid AND t.xmin = u.x AND u.tid IN (SELECT tid FROM locked)
      RETURNING ${plan.keys.map((k, i) => `t.${q(k.column)}::text AS k${i}`).join(', ')}
    ), requeued AS (
      INSERT INTO ${queue} (pgscore_n, ${keys.join(', ')})
      SELECT count(*), ${plan.keys.map((_, i) => `array_agg(${castKey('u', i)})`).join(', ')} FROM u
       WHERE (${keyCols.map((k) => `u.${k}`).join(', ')}) NOT IN (SELECT ${keyCols.map((k) => `w.${k}`).join(', ')} FROM written w)
      HAVING count(*) > 0
    ), dead AS (
      INSERT INTO ml._dead_letters AS e (deployment_id, row_key, reason)
      SELECT $1, ${rowKey('b')}, b.reason
        FROM unnest(${deadKeyParams.map((p) => `${p}::text[]`).join(', ')}, ${reasonParam}::text[]) AS b(${keyCols.join(', ')}, reason)
      ON CONFLICT (deployment_id, row_key)
      DO UPDATE SET reason = excluded.reason, attempts = e.attempts + 1, last_seen = now()
    ), cleared AS (
      -- Rows that scored now are no dead letters any more (checked only when there are any).
      DELETE FROM ml._dead_letters e USING (SELECT ${rowKey('w')} AS row_key FROM written w) w
       WHERE EXISTS (SELECT 1 FROM ml._dead_letters x WHERE x.deployment_id = $1)
         AND e.deployment_id = $1 AND e.row_key = w.row_key
    ), stats AS (
      INSERT INTO ml._batches (deployment_id, scored, dead, latency_hist)
      SELECT $1, (SELECT count(*) FROM written), cardinality(${reasonParam}::text[]), ${histogramParam}::int[]
    )
    SELECT (SELECT count(*) FROM written)::int AS written`;

  const requeueText = `
    INSERT INTO ${queue} (pgscore_n, ${keys.join(', ')})
    SELECT count(*), ${plan.keys.map((_, i) => `array_agg(${castKey('r', i)})`).join(', ')}
      FROM unnest(${plan.keys.map((_, i) => `$${i + 1}::text[]`).join(', ')}) AS r(${keyCols.join(', ')})
    HAVING count(*) > 0`;

  const version = hash(claimText + writeBackText);
  return {
    requeue: { name: `pgscore_requeue_${id}_${version}`, text: requeueText },
    fingerprint: version,
    claim: { name: `pgscore_claim_${id}_${version}`, text: claimText, rowMode: 'array' },
    firstValue: keyCount + 4,
    writeBack: { name: `pgscore_write_${id}_${version}`, text: writeBackText },
    pending: `SELECT EXISTS (SELECT 1 FROM ${queue})`,
  };
}

/** Kafka messages no worker could decode, kept for ml.errors. $1..$5: parallel arrays. */
export const RECORD_POISON = `
  INSERT INTO ml._poison_messages (topic, "partition", "offset", message_key, reason)
  SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[], $4::text[], $5::text[])`;

/** $1 deployment id, $2 rows produced by the relay. */
export const COUNT_RELAYED = `
  INSERT INTO ml._kafka_counts AS k (deployment_id, relayed) VALUES ($1, $2)
  ON CONFLICT (deployment_id) DO UPDATE SET relayed = k.relayed + excluded.relayed`;

/** $1 deployment id, $2 rows consumed by a Kafka worker. */
export const COUNT_CONSUMED = `
  INSERT INTO ml._kafka_counts AS k (deployment_id, consumed) VALUES ($1, $2)
  ON CONFLICT (deployment_id) DO UPDATE SET consumed = k.consumed + excluded.consumed`;

function hash(text: string): string {
  let h = 0;
  for (let i = 0; i < text.length; i++) h = (Math.imul(h, 31) + text.charCodeAt(i)) | 0;
  return (h >>> 0).toString(36);
}
