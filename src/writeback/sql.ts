import pg from 'pg';
import { queueKeyColumns, queueTable } from '../queue/names.js';
import type { Plan } from '../scoring/plan.js';

const q = pg.escapeIdentifier;

/**
 * Delay before a row that could not be written back (locked by someone else, or changed since
 * it was read) is claimed again: 50 ms, doubling per attempt, at most a second. A row an
 * application keeps locked is tried about once a second, not in a hot loop.
 */
export const RETRY_DELAY_SQL = (attempts: string) =>
  `CASE WHEN ${attempts} = 0 THEN NULL ELSE now() + least(1000, 25 * power(2, least(${attempts}, 16))) * interval '1 millisecond' END`;

/** Whether a deployment's write-back writes to the prediction log (and takes the run-time parameter). */
export function logsPredictions(plan: Plan): boolean {
  return plan.log_sample > 0 || plan.shadow !== null;
}

/**
 * The write-back statement, run in the batch's transaction. Parameters:
 *   $1 deployment id; then per key column the scored rows' key texts; their xmins, ctids and
 *   attempts; one array per output; per key column the dead rows' key texts; their reasons,
 *   xmins, ctids and attempts; the latency histogram; the model version that scored the rows (name@version), written to
 *   the provenance column with the time (the batch's transaction time) unless turned off; the
 *   model's run time per row in µs; with a shadow model, one array per output of its values
 *   (NULL where it failed), its error per row, its version and its run time per row.
 * The prediction log (ml._prediction_batches, a row per batch and role) gets the written
 * predictions (a sample of them, per the plan's log_sample; all of them with a shadow), the dead
 * letters, and the shadow's predictions of the written rows, all at the batch's transaction time.
 * Newest wins: only the row version that was read takes the prediction; rows changed since they
 * were read go back to the queue with a retry delay. The worker never waits long for a row lock
 * (so it cannot deadlock with an application's multi-row UPDATE). Two forms:
 *  - fast: the UPDATE itself, by ctid and xmin, in a savepoint with a short lock_timeout
 *    (writeback.ts); a row an application holds locked makes it time out, and the batch is
 *    written again in the careful form.
 *  - careful: rows are first locked with SKIP LOCKED, and the UPDATE takes only those; rows locked
 *    by someone else go back to the queue. It costs a lock pass (and a WAL record) per row.
 *
 * On an ordinary table rows are found by ctid (TID scans). A ctid is unique only within one
 * partition, so on a partitioned table they are found by primary key, which is unique across
 * partitions (every partition's key includes the partition key).
 */
export function writeBackSql(deploymentId: number, plan: Plan, table: string, partitioned: boolean, form: 'fast' | 'careful'): string {
  const queue = queueTable(deploymentId);
  let n = 1;
  const param = () => `$${++n}`;
  const keyParams = plan.keys.map(() => param());
  const xminParam = param();
  const tidParam = param();
  const attemptsParam = param();
  const outputParams = plan.outputs.map(() => param());
  const deadKeyParams = plan.keys.map(() => param());
  const reasonParam = param();
  const deadXminParam = param();
  const deadTidParam = param();
  const deadAttemptsParam = param();
  const histogramParam = param();
  const modelParam = param();
  const logged = logsPredictions(plan);
  const scoreUsParam = logged ? param() : '';
  const shadow = plan.shadow
    ? { outputs: plan.outputs.map(() => param()), error: param(), model: param(), scoreUs: param() }
    : undefined;

  const keyCols = plan.keys.map((_, i) => `k${i}`);
  const castKey = (alias: string, i: number) => `${alias}.k${i}::${plan.keys[i]!.type}`;
  const rowKey = (alias: string) =>
    `jsonb_build_object(${plan.keys.map((k, i) => `${pg.escapeLiteral(k.column)}, ${castKey(alias, i)}`).join(', ')})`;
  const outputType = (i: number) => (plan.outputs[i]!.array ? 'text' : plan.outputs[i]!.sql_type);
  const matchKeysOf = (alias: string) => plan.keys.map((k, i) => `t.${q(k.column)} = ${castKey(alias, i)}`).join(' AND ');
  const matchKeys = matchKeysOf('u');

  const locked = partitioned
    ? `SELECT t.tableoid AS toid, t.ctid AS tid FROM ${table} t JOIN u ON ${matchKeys}
         FOR NO KEY UPDATE OF t SKIP LOCKED`
    : // ARRAY(SELECT …) keeps this a TID scan: with the array as a constant the planner may
      // prefer to scan a mid-sized table.
      `SELECT t.tableoid AS toid, t.ctid AS tid FROM ${table} t WHERE t.ctid = ANY (ARRAY(SELECT tid FROM u))
         FOR NO KEY UPDATE OF t SKIP LOCKED`;
  const match = partitioned ? matchKeys : 't.ctid = u.tid';
  const careful = form === 'careful';

  const shadowCols = shadow ? [...plan.outputs.map((_, i) => `s${i}`), 'serr'] : [];
  const shadowParams = shadow
    ? [...shadow.outputs.map((p, i) => `${p}::${outputType(i)}[]`), `${shadow.error}::text[]`]
    : [];
  const role = plan.variants ? 'variant' : 'live';
  const sampled = shadow || plan.log_sample >= 1 ? '' : `WHERE random() < ${plan.log_sample}`;
  const outputsJson = (value: (i: number) => string) =>
    `jsonb_build_object(${plan.outputs.map((o, i) => `${pg.escapeLiteral(o.column)}, ${value(i)}`).join(', ')})`;
  // One log row per batch, model and role, with one array element per prediction (0007_prediction_batches.sql).
  const logCtes = [
    ...(logged
      ? [`logged AS (
      INSERT INTO ml._prediction_batches (deployment_id, row_keys, model, role, outputs, score_us)
      SELECT $1, array_agg(${rowKey('w')}), ${modelParam}::text, '${role}', array_agg(w.pgscore_outputs), ${scoreUsParam}::real
        FROM written w ${sampled} HAVING count(*) > 0
    )`,
        `dead_logged AS (
      INSERT INTO ml._prediction_batches (deployment_id, row_keys, model, role, errors)
      SELECT $1, array_agg(${rowKey('b')}), ${modelParam}::text, '${role}', array_agg(b.reason)
        FROM dead_kept b
      HAVING count(*) > 0
    )`]
      : []),
    ...(shadow
      ? [`shadow_logged AS (
      INSERT INTO ml._prediction_batches (deployment_id, row_keys, model, role, outputs, errors, score_us)
      SELECT $1, array_agg(${rowKey('w')}), ${shadow.model}::text, 'shadow',
             array_agg(CASE WHEN w.serr IS NULL THEN ${outputsJson((i) => `w.s${i}${plan.outputs[i]!.array ? `::${plan.outputs[i]!.sql_type}` : ''}`)} END),
             array_agg(w.serr), ${shadow.scoreUs}::real
        FROM written w HAVING count(*) > 0
    )`]
      : []),
  ];

  const uOutput = (alias: string, i: number) => `${alias}.o${i}${plan.outputs[i]!.array ? `::${plan.outputs[i]!.sql_type}` : ''}`;
  const loggedColumns = (alias: string) => [
    // From u, not t: the worker may update prediction columns, not read them.
    ...(logged ? [`${outputsJson((i) => uOutput(alias, i))} AS pgscore_outputs`] : []),
    ...shadowCols.map((c) => `${alias}.${c}`),
  ];
  const updateCtes = `${careful ? `locked AS (
      ${locked}
    ), ` : ''}written AS (
      UPDATE ${table} t
         SET ${[
           ...plan.outputs.map((o, i) => `${q(o.column)} = u.o${i}${o.array ? `::${o.sql_type}` : ''}`),
           ...(plan.provenance
             ? [`${q(plan.provenance.model.column)} = ${modelParam}::text`, `${q(plan.provenance.scored_at.column)} = now()`]
             : []),
         ].join(', ')}
        FROM u
       WHERE ${[match, 't.xmin = u.x', ...(careful
         ? ['(t.tableoid, t.ctid) IN (SELECT toid, tid FROM locked)']
         : partitioned ? [] : ['t.ctid = ANY (ARRAY(SELECT tid FROM u))'])].join(' AND ')}
      RETURNING ${[
        ...plan.keys.map((k, i) => `t.${q(k.column)}::text AS k${i}`),
        ...loggedColumns('u'),
      ].join(', ')}`;
  // A side table (target): rows still at the version read get a new row there; the source is
  // only read. Nothing is locked: a row changed meanwhile is queued again by its own UPDATE.
  const target = plan.target;
  const appendCtes = target
    ? `matched AS (
      SELECT u.* FROM u JOIN ${partitioned
        ? `${table} t ON ${matchKeys} AND t.xmin = u.x`
        : `(SELECT t.ctid AS tid, t.xmin AS x FROM ${table} t WHERE t.ctid = ANY (ARRAY(SELECT tid FROM u))) t ON t.tid = u.tid AND t.x = u.x`}
    ), appended AS (
      INSERT INTO ${target.table} (${[...plan.keys.map((k) => q(k.column)), ...plan.outputs.map((o) => q(o.column)), 'model', 'scored_at'].join(', ')})
      SELECT ${[...plan.keys.map((_, i) => castKey('m', i)), ...plan.outputs.map((_, i) => uOutput('m', i)), `${modelParam}::text`, 'now()'].join(', ')}
        FROM matched m
    ), written AS (
      SELECT ${[...keyCols.map((k) => `m.${k}`), ...loggedColumns('m')].join(', ')} FROM matched m`
    : '';

  // Newest wins for dead letters too: a dead letter is recorded only for the row version that was
  // read, which stays share-locked until the batch commits (an application's change of it waits
  // for the commit, then queues it again, and the next write-back clears the dead letter). Rows
  // changed or locked since go back to the queue. A side table's source is only read: checked,
  // not locked.
  const deadLocking = target ? '' : ' FOR SHARE OF t SKIP LOCKED';
  const deadCurrent = partitioned
    ? `SELECT ${keyCols.map((k) => `b.${k}`).join(', ')}, t.xmin AS x FROM ${table} t JOIN dead_rows b ON ${matchKeysOf('b')}${deadLocking}`
    : `SELECT t.ctid AS tid, t.xmin AS x FROM ${table} t WHERE t.ctid = ANY (ARRAY(SELECT tid FROM dead_rows))${deadLocking}`;
  const deadMatch = partitioned
    ? [...keyCols.map((k) => `c.${k} = b.${k}`), 'c.x = b.x'].join(' AND ')
    : 'c.tid = b.tid AND c.x = b.x';
  const deadCtes = `dead_rows AS (
      SELECT * FROM unnest(${deadKeyParams.map((p) => `${p}::text[]`).join(', ')}, ${reasonParam}::text[],
                           ${deadXminParam}::xid[], ${deadTidParam}::tid[], ${deadAttemptsParam}::int[])
             AS b(${keyCols.join(', ')}, reason, x, tid, attempts)
    ), dead_current AS (
      ${deadCurrent}
    ), dead_kept AS (
      SELECT b.* FROM dead_rows b WHERE EXISTS (SELECT 1 FROM dead_current c WHERE ${deadMatch})
    )`;

  return `
    WITH u AS (
      SELECT * FROM unnest(${keyParams.map((p) => `${p}::text[]`).join(', ')}, ${xminParam}::xid[], ${tidParam}::tid[],
                           ${attemptsParam}::int[], ${[...outputParams.map((p, i) => `${p}::${outputType(i)}[]`), ...shadowParams].join(', ')})
             AS u(${keyCols.join(', ')}, x, tid, attempts, ${[...plan.outputs.map((_, i) => `o${i}`), ...shadowCols].join(', ')})
    ), ${target ? appendCtes : updateCtes}
    ), ${deadCtes}, requeued AS (
      INSERT INTO ${queue} (pgscore_n, pgscore_attempts, pgscore_not_before, ${queueKeyColumns(plan).join(', ')})
      SELECT count(*), r.attempts, ${RETRY_DELAY_SQL('r.attempts')},
             ${plan.keys.map((_, i) => `array_agg(${castKey('r', i)})`).join(', ')}
        FROM (SELECT ${keyCols.map((k) => `u.${k}`).join(', ')}, least(u.attempts + 1, 10000) AS attempts FROM u
               WHERE (${keyCols.map((k) => `u.${k}`).join(', ')}) NOT IN (SELECT ${keyCols.map((k) => `w.${k}`).join(', ')} FROM written w)
              UNION ALL
              SELECT ${keyCols.map((k) => `b.${k}`).join(', ')}, least(b.attempts + 1, 10000) FROM dead_rows b
               WHERE NOT EXISTS (SELECT 1 FROM dead_kept k WHERE ${keyCols.map((k) => `k.${k} = b.${k}`).join(' AND ')})) r
       GROUP BY r.attempts
    ), dead AS (
      INSERT INTO ml._dead_letters AS e (deployment_id, row_key, reason)
      SELECT $1, ${rowKey('b')}, b.reason FROM dead_kept b
      ON CONFLICT (deployment_id, row_key)
      DO UPDATE SET reason = excluded.reason, attempts = e.attempts + 1, last_seen = now()
    ), cleared AS (
      -- Rows that scored now are no dead letters any more (checked only when there are any).
      DELETE FROM ml._dead_letters e USING (SELECT ${rowKey('w')} AS row_key FROM written w) w
       WHERE EXISTS (SELECT 1 FROM ml._dead_letters x WHERE x.deployment_id = $1)
         AND e.deployment_id = $1 AND e.row_key = w.row_key
    ), stats AS (
      INSERT INTO ml._batches (deployment_id, scored, dead, latency_hist, model)
      SELECT $1, (SELECT count(*) FROM written), (SELECT count(*) FROM dead_kept), ${histogramParam}::int[], ${modelParam}::text
    )${logCtes.map((cte) => `, ${cte}`).join('')}
    SELECT (SELECT count(*) FROM written)::int AS written, (SELECT count(*) FROM dead_kept)::int AS dead${
      plan.capture === 'wal' ? `,
           ${WRITE_BACK_MARKER} AS marked` : ''}`;
}

/**
 * A deployment captured from the WAL (src/capture/) marks its write-back transactions with a
 * logical message: the capture skips their changes, as the triggers skip them by pgscore.writeback.
 */
export const WRITE_BACK_MARKER = "pg_catalog.pg_logical_emit_message(true, 'pgscore', 'writeback')";
