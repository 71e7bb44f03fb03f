import type pg from 'pg';

/**
 * The chaos table and the SQL that judges it. The model is typed.onnx (v1) and its variant
 * (v2, test/helpers/chaos.ts): both predictions are exact sums of small integers, so "a fresh
 * scoring of the row's final inputs" is an SQL expression, compared with `=`.
 */
export const TABLE = 'chaos';
export const DEPLOYMENT = 'chaos';
export const MODEL = 'typed';

const V1 = 'a::float8 + b::float8 + c + d + e + ok::int';
const V2 = 'a::float8 + b::float8 + c + 2 * e + ok::int';

/**
 * `version` counts the application's updates of a row (the worker never touches it), so each
 * (id, version) is one set of inputs. `chaos_writes` logs every prediction the worker commits
 * with the version it scored: a version written twice is a duplicate write. e starts above 999
 * and only grows while d stays below 1000, so v1 and v2 never agree on a row.
 */
export async function createChaosTable(db: pg.Pool): Promise<void> {
  await db.query(`
    CREATE TABLE ${TABLE} (
      id int PRIMARY KEY,
      a real NOT NULL, b real NOT NULL, c float8 NOT NULL, d int NOT NULL, e bigint NOT NULL, ok bool NOT NULL,
      tag text NOT NULL,
      version int NOT NULL DEFAULT 0,
      changed_at timestamptz NOT NULL DEFAULT clock_timestamp());
    CREATE TABLE chaos_writes (id int NOT NULL, version int NOT NULL, total float8);
    -- Statement-level with transition tables, like pgscore's own triggers: the log costs one
    -- INSERT per write-back statement. Application updates bump version; write-backs do not.
    CREATE FUNCTION log_chaos_writes() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    BEGIN
      INSERT INTO chaos_writes (id, version, total)
      SELECT n.id, n.version, n.total FROM new_rows n JOIN old_rows o ON o.id = n.id WHERE n.version = o.version;
      RETURN NULL;
    END $$;
    CREATE TRIGGER log_chaos_writes AFTER UPDATE ON ${TABLE}
      REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
      FOR EACH STATEMENT EXECUTE FUNCTION log_chaos_writes();`);
  await db.query(`SELECT ml.deploy($1, $2, $3,
    '{"f32": ["a", "b"], "f64": "c", "i32": "d", "i64": "e", "flag": "ok", "tag": "tag"}', '{"total": "total"}')`, [
    DEPLOYMENT,
    TABLE,
    MODEL,
  ]);
}

/** One bulk statement: rows from..to (idempotent, so it can be sent again after a restart). */
export const INSERT_ROWS = `
  INSERT INTO ${TABLE} (id, a, b, c, d, e, ok, tag)
  SELECT g, g % 7, g % 11, g % 13, g % 1000, 1000 + g % 5000, g % 2 = 0, 't' || g % 3
    FROM generate_series($1::int, $2::int) g
  ON CONFLICT (id) DO NOTHING`;

/** New inputs for the rows $1 (sorted, so concurrent updaters lock in one order and never deadlock). */
export const UPDATE_ROWS = `
  UPDATE ${TABLE}
     SET c = floor(random() * 100), d = floor(random() * 1000), e = e + 1 + floor(random() * 10)::int, ok = NOT ok,
         version = version + 1, changed_at = clock_timestamp()
   WHERE id = ANY ($1::int[])`;

/** Worker connections inside a batch that has claimed rows (its DELETE gave it a transaction id). */
export const OPEN_BATCHES = `SELECT count(*)::int AS n FROM pg_stat_activity
  WHERE application_name = 'pgscore worker' AND datname = current_database() AND backend_xid IS NOT NULL`;

/** Rows that have a prediction (scored at least once). */
export const SCORED = `SELECT count(*)::int AS n FROM ${TABLE} WHERE total IS NOT NULL`;

export interface Verdict {
  rows: number;
  updates: number;
  lost: number;
  stale: number;
  byV1: number;
  byV2: number;
  writes: number;
  duplicates: number;
  batchScored: number;
  deadLetters: number;
  pending: number;
}

/**
 * $1: the time from which every running worker had been started after the promote. A row
 * whose last change came later can only have been scored by v2; one changed earlier may carry
 * either version's prediction, but only of its final inputs.
 */
export async function judge(db: pg.Pool, switchedAt: Date): Promise<Verdict> {
  const { rows } = await db.query<Record<keyof Verdict, string | number>>(`
    WITH r AS (SELECT total, changed_at, version, ${V1} AS by_v1, ${V2} AS by_v2 FROM ${TABLE})
    SELECT count(*) AS rows,
           coalesce(sum(version), 0) AS updates,
           count(*) FILTER (WHERE total IS NULL) AS lost,
           count(*) FILTER (WHERE total IS NOT NULL AND total IS DISTINCT FROM by_v2
                              AND (changed_at >= $1 OR total IS DISTINCT FROM by_v1)) AS stale,
           count(*) FILTER (WHERE total = by_v1) AS "byV1",
           count(*) FILTER (WHERE total = by_v2) AS "byV2",
           (SELECT count(*) FROM chaos_writes) AS writes,
           (SELECT count(*) - count(DISTINCT (id, version)) FROM chaos_writes) AS duplicates,
           (SELECT coalesce(sum(b.scored), 0) FROM ml._batches b JOIN ml._deployments d ON d.id = b.deployment_id
             WHERE d.name = $2) AS "batchScored",
           (SELECT dead_letters FROM ml.status WHERE deployment = $2) AS "deadLetters",
           (SELECT pending FROM ml.status WHERE deployment = $2) AS pending
      FROM r`, [switchedAt, DEPLOYMENT]);
  const row = rows[0]!;
  return Object.fromEntries(Object.entries(row).map(([k, v]) => [k, Number(v)])) as unknown as Verdict;
}
