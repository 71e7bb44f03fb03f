import pg from 'pg';
import { z } from 'zod';
import { PgscoreError } from '../errors.js';
import { planSchema, type Plan } from '../scoring/plan.js';
import { signatureSchema, type Signature } from '../models/signature.js';

/**
 * The worker's statements about deployments, models and statistics. Identifiers are quoted with
 * pg.escapeIdentifier; values travel as parameters. Each deployment's queue statements (claim,
 * write-back, requeue) live in src/queue and src/writeback.
 */

const q = pg.escapeIdentifier;

/**
 * The worker's write-back transaction: its own writes must not queue rows again (the triggers
 * skip them for members of pgscore_worker), and input expressions and operators resolve in
 * pg_catalog only, whatever other roles created in public.
 */
export const BEGIN_WRITEBACK = "BEGIN; SET LOCAL pgscore.writeback = 'on'; SET LOCAL search_path = pg_catalog, pg_temp";

/**
 * The same, committing without waiting for the WAL flush (synchronous_commit off), for
 * transactions whose every effect is redone when they are lost: a notify batch deletes its queue
 * rows in the transaction that writes their predictions, so a crash that loses the commit leaves
 * the rows queued, and they are scored again. Not for the Kafka worker, which commits its offsets
 * to the broker once Postgres has committed.
 */
export const BEGIN_WRITEBACK_REDOABLE = `${BEGIN_WRITEBACK}; SET LOCAL synchronous_commit = off`;

/**
 * The idle lock: a worker sleeps holding ml._wake in SHARE mode, in an open transaction (table
 * locks last as long as one); see ml._wake_worker in sql/functions/027_locks.sql. NOWAIT: it
 * fails (55P03) while a writer that saw the worker busy has not committed.
 */
export const TRY_IDLE_LOCK = 'BEGIN; LOCK TABLE ml._wake IN SHARE MODE NOWAIT';
export const RELEASE_IDLE_LOCK = 'COMMIT';
/** Per deployment, the last number its queue handed out (ml._queue_heads). */
export const QUEUE_HEADS = 'SELECT deployment_id, head::text FROM ml._queue_heads()';
/** $1 deployment ids: those whose queue holds a due row (the slow safety poll). */
export const QUEUES_WITH_WORK = 'SELECT ml._queues_with_work($1::int[]) AS id';

export interface DeploymentRow {
  readonly id: number;
  readonly name: string;
  readonly model: string;
  readonly version: number;
  /** The source table, schema-qualified and quoted. */
  readonly table: string;
  readonly partitioned: boolean;
  /** The source table's oid (what the WAL names it by). */
  readonly source: number;
  readonly plan: Plan;
  /** The xmin of the deployment's row when it was read: a claim checks it is still current. */
  readonly rowVersion: string;
}

const deploymentRow = z.object({
  id: z.number(),
  name: z.string(),
  model: z.string(),
  version: z.number(),
  schema: z.string(),
  relname: z.string(),
  partitioned: z.boolean(),
  source: z.coerce.number(),
  plan: planSchema,
  row_version: z.string(),
});

export async function listActiveDeployments(db: pg.ClientBase | pg.Pool): Promise<DeploymentRow[]> {
  const { rows } = await db.query(`
    SELECT d.id, d.name, d.model, ml._resolve_version(d.model, d.version, d.alias) AS version,
           n.nspname AS schema, c.relname, c.relkind = 'p' AS partitioned, c.oid AS source, d.plan, d.xmin::text AS row_version
      FROM ml._deployments d
      JOIN pg_class c ON c.oid = d.source
      JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE d.status = 'active'
     ORDER BY d.id`);
  return rows.map((row) => {
    const parsed = deploymentRow.safeParse(row);
    if (!parsed.success) {
      throw new PgscoreError(`deployment ${String((row as { name?: unknown }).name)} has a plan this worker cannot read`, {
        cause: parsed.error,
        hint: 'Run `pgscore migrate` with this version of pgscore: it rebuilds every deployment for the current plan layout.',
      });
    }
    const { row_version: rowVersion, ...data } = parsed.data;
    return { ...data, rowVersion, table: `${q(data.schema)}.${q(data.relname)}` };
  });
}

/**
 * Re-plans deployments whose table changed (they stay active or turn invalid with the reason),
 * marks those whose table is gone, and activates pending ones whose model was read meanwhile.
 * The event triggers do this at once where migrate could install them.
 */
/**
 * $1 the last deployment id checked before, $2 the budget in ms: re-checks deployments against
 * their tables (sql/functions/045_schema_changes.sql); next_after is where the next one goes on.
 */
export const RECHECK_DEPLOYMENTS = 'SELECT changed, next_after FROM ml._recheck_deployments($1, $2)';

/** How long a re-check after a failed batch tries for its deployment while a DBA call holds it. */
const RECHECK_WAIT_MS = 10_000;

/**
 * Re-plans one deployment after a batch failed (ml._recheck, sql/functions/035_deploy.sql); returns
 * its status: 'undeployed' when it is gone, 'busy' when a DBA call or DDL held it for
 * RECHECK_WAIT_MS (the worker gives way to them rather than wait holding the table).
 */
export async function recheckDeployment(db: pg.ClientBase | pg.Pool, id: number, context: string): Promise<string> {
  const { rows } = await db.query<{ status: string }>('SELECT ml._recheck($1, $2, $3) AS status', [id, context, RECHECK_WAIT_MS]);
  return rows[0]?.status ?? 'undeployed';
}

/** $1 deployment id, $2 reason: no prediction can be written to its table; it turns invalid. */
export const INVALIDATE_UNWRITABLE = 'SELECT ml._invalidate_unwritable($1, $2)';

/** Whether migrate could install the event triggers that re-plan deployments on ALTER TABLE. */
export const HAS_EVENT_TRIGGERS = "SELECT count(*) = 2 AS present FROM pg_event_trigger WHERE evtname IN ('pgscore_alter_table', 'pgscore_drop')";

/** Who the worker is: superuser, member of the worker group. */
export const WHO_AM_I = `
  SELECT current_user AS role, r.rolsuper AS superuser,
         EXISTS (SELECT 1 FROM pg_roles w WHERE w.rolname = 'pgscore_worker') AND pg_has_role('pgscore_worker', 'MEMBER') AS worker
    FROM pg_roles r WHERE r.rolname = current_user`;

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


/** Kafka messages no worker could decode, kept for ml.errors. $1..$5: parallel arrays. */
export const RECORD_POISON = `
  INSERT INTO ml._poison_messages (topic, "partition", "offset", message_key, reason)
  SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[], $4::text[], $5::text[])`;

/** $1 deployment id, $2 rows produced by the relay. */
export const COUNT_RELAYED = `
  INSERT INTO ml._kafka_counts AS k (deployment_id, relayed) VALUES ($1, $2)
  ON CONFLICT (deployment_id) DO UPDATE SET relayed = k.relayed + excluded.relayed`;

/**
 * A relay batch's messages, where the broker appended them (ml.status.in_kafka counts those past
 * the group's committed offset), and its rows in the deployment's counter: $1 deployment id,
 * $2 rows, $3 topic, $4..$6 each message's partition, offset and rows.
 */
export const RECORD_RELAYED = `
  WITH produced AS (
    INSERT INTO ml._kafka_messages (topic, "partition", "offset", deployment_id, rows)
    SELECT $3, u.p, u.o, $1, u.n FROM unnest($4::int[], $5::bigint[], $6::int[]) AS u(p, o, n)
     WHERE u.o >= 0
    ON CONFLICT DO NOTHING)
  INSERT INTO ml._kafka_counts AS k (deployment_id, relayed) VALUES ($1, $2)
  ON CONFLICT (deployment_id) DO UPDATE SET relayed = k.relayed + excluded.relayed`;

/**
 * Rows a Kafka worker's chunk consumed, per deployment: $1 deployment ids, $2 rows. One statement
 * at the end of the chunk's transaction, taking the counters' row locks in deployment order: two
 * chunks holding rows of the same deployments (two workers, or two lanes) wait for one another
 * instead of deadlocking, and hold the locks only until their commit.
 */
export const COUNT_CONSUMED = `
  INSERT INTO ml._kafka_counts AS k (deployment_id, consumed)
  SELECT u.id, u.n FROM unnest($1::int[], $2::bigint[]) AS u(id, n) ORDER BY u.id
  ON CONFLICT (deployment_id) DO UPDATE SET consumed = k.consumed + excluded.consumed`;

/**
 * Offsets the workers' group committed: $1 topic, $2 partitions, $3 offsets (the next message to
 * read), after a commit or as the group's coordinator has them after a join. They only move
 * forward: a late record of an older commit never moves one back. The messages before them are
 * handled: their records go.
 */
export const RECORD_COMMITTED = `
  WITH committed AS (
    INSERT INTO ml._kafka_committed AS c (topic, "partition", "offset")
    SELECT $1, u.p, u.o FROM unnest($2::int[], $3::bigint[]) AS u(p, o) ORDER BY u.p
    ON CONFLICT (topic, "partition") DO UPDATE SET "offset" = greatest(c."offset", excluded."offset")
    RETURNING c.topic, c."partition", c."offset")
  DELETE FROM ml._kafka_messages m USING committed c
   WHERE m.topic = c.topic AND m."partition" = c."partition" AND m."offset" < c."offset"`;

/** Invalid and pending deployments that keep a queue: where a Kafka worker parks their rows. */
export async function listParkedDeployments(db: pg.Pool): Promise<{ id: number; plan: Plan }[]> {
  const { rows } = await db.query<{ id: number; plan: unknown }>(`
    SELECT d.id, d.plan FROM ml._deployments d
     WHERE d.status IN ('invalid', 'pending') AND d.plan IS NOT NULL
       AND to_regclass(format('ml.%I', '_queue_' || d.id)) IS NOT NULL`);
  return rows.flatMap((row) => {
    const plan = planSchema.safeParse(row.plan);
    return plan.success ? [{ id: row.id, plan: plan.data }] : [];
  });
}
