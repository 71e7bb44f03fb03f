-- Runs: a deployment's rows queued at once behind live traffic, and followed until they are
-- scored. ml.backfill, ml.run_now, a batch deployment's schedule and a rescore after ml.promote
-- all start one; ml.runs shows them with their progress.

-- The model a run scores with: the deployment's version, or its split.
CREATE OR REPLACE FUNCTION ml._run_model(d ml._deployments)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT coalesce(
    (SELECT string_agg(format('%s (%s)', v->>'ref', v->>'weight'), ', ' ORDER BY v->>'ref')
       FROM jsonb_array_elements(CASE WHEN jsonb_typeof(d.plan->'variants') = 'array' THEN d.plan->'variants' ELSE '[]' END) v),
    format('%s@%s', d.model, ml._resolve_version(d.model, d.version, d.alias)))
$$;

-- The query p_query (its result described by p_columns, "id int, site text") run with the rights
-- of role p_owner, as the source of a FROM: a filter is code of the table's owner, and pgscore's
-- functions run as the schema owner, a superuser. A function owned by p_owner and SECURITY
-- DEFINER does that; it lives in this session's pg_temp and this transaction only, so no one
-- else can see or change it before it is dropped again (ml._drop_as_owner).
CREATE OR REPLACE FUNCTION ml._as_owner(p_owner oid, p_query text, p_columns text)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  CREATE OR REPLACE FUNCTION pg_temp.pgscore_as_owner(p_query text)
  RETURNS SETOF record
  LANGUAGE plpgsql
  SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
  AS $f$
  BEGIN
    RETURN QUERY EXECUTE p_query;
  END
  $f$;
  EXECUTE format('ALTER FUNCTION pg_temp.pgscore_as_owner(text) OWNER TO %I', (SELECT r.rolname FROM pg_roles r WHERE r.oid = p_owner));
  RETURN format('SELECT * FROM pg_temp.pgscore_as_owner(%L) AS o(%s)', p_query, p_columns);
END
$$;

CREATE OR REPLACE FUNCTION ml._drop_as_owner()
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
  DROP FUNCTION IF EXISTS pg_temp.pgscore_as_owner(text);
$$;

-- Starts a run of an active deployment: queues its rows (those matching p_filter, else the
-- deployment's filter option, else all) at backfill priority and records the run. Returns the
-- run's id, or NULL when the scheduled run p_scheduled_for exists already. Whoever starts the run
-- (an admin, the scheduler in a worker, a promotion), the filter runs with the rights of the
-- table's owner, never with pgscore's.
CREATE OR REPLACE FUNCTION ml._start_run(p_id int, p_kind text, p_filter text DEFAULT NULL, p_scheduled_for timestamptz DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  d ml._deployments;
  v_filter text;
  v_checked jsonb;
  v_keys text;
  v_from text;
  v_run bigint;
  v_queued record;
BEGIN
  SELECT * INTO STRICT d FROM ml._deployments WHERE id = p_id;
  d := ml._active_deployment(d.name);
  -- A backfill without a filter queues every row; other runs default to the deployment's filter.
  v_filter := coalesce(p_filter, CASE WHEN p_kind <> 'backfill' THEN d.plan->>'filter' END);
  -- The filter passes the same checks as input expressions (checked, never run, here).
  IF p_filter IS NOT NULL THEN
    v_checked := ml._check_expression(d.source, 'backfill filter', p_filter);
    IF (v_checked->>'type')::oid <> 'boolean'::regtype THEN
      RAISE EXCEPTION 'backfill filter (%) is not a condition (it gives %)', p_filter, format_type((v_checked->>'type')::oid, NULL)
        USING ERRCODE = 'datatype_mismatch', HINT = 'Give a condition on the table''s columns, like "created_at > now() - interval ''1 day''".';
    END IF;
  END IF;

  INSERT INTO ml._runs (deployment_id, deployment, kind, scheduled_for, model, filter)
  VALUES (d.id, d.name, p_kind, p_scheduled_for, ml._run_model(d), v_filter)
  ON CONFLICT (deployment_id, scheduled_for) DO NOTHING
  RETURNING id INTO v_run;
  IF v_run IS NULL THEN
    RETURN NULL;
  END IF;

  SELECT string_agg(format('%I', k->>'column'), ', ') INTO v_keys FROM jsonb_array_elements(d.plan->'keys') k;
  v_from := format('SELECT %s FROM %s', v_keys, ml._relname(d.source));
  IF v_filter IS NOT NULL THEN
    v_from := ml._as_owner((SELECT c.relowner FROM pg_class c WHERE c.oid = d.source), format('%s WHERE %s', v_from, v_filter),
                           (SELECT string_agg(format('%I %s', k->>'column', k->>'type'), ', ') FROM jsonb_array_elements(d.plan->'keys') k));
  END IF;
  EXECUTE format('WITH queued AS (%s RETURNING pgscore_n, pgscore_seq)
                  SELECT coalesce(sum(pgscore_n), 0) AS n, min(pgscore_seq) AS first, max(pgscore_seq) AS last FROM queued',
                 ml._enqueue_sql(d.id, d.plan, v_from, 1))
    INTO v_queued;
  IF v_filter IS NOT NULL THEN
    PERFORM ml._drop_as_owner();
  END IF;
  UPDATE ml._runs
     SET rows = v_queued.n, first_seq = v_queued.first, last_seq = v_queued.last,
         state = CASE WHEN v_queued.n = 0 THEN 'finished' ELSE 'running' END,
         finished_at = CASE WHEN v_queued.n = 0 THEN now() END,
         dead_letters = CASE WHEN v_queued.n = 0 THEN 0 END
   WHERE id = v_run;
  IF v_queued.n > 0 THEN
    PERFORM pg_notify('pgscore_wake', d.id::text);
  END IF;
  RETURN v_run;
END
$$;

-- Queues existing rows (all, or those matching filter) behind live traffic, as a run (see
-- ml.runs); returns how many.
CREATE OR REPLACE FUNCTION ml.backfill(deployment text, filter text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  d ml._deployments := ml._active_deployment(deployment);
  v_run bigint;
BEGIN
  PERFORM ml._require_owner(d.source, format('backfill "%s"', d.name));
  v_run := ml._start_run(d.id, 'backfill', filter);
  RETURN (SELECT r.rows FROM ml._runs r WHERE r.id = v_run);
END
$$;

-- Starts a run of a deployment now (a batch deployment outside its schedule, or a full rescore
-- of a live one), over the rows its "filter" option selects. Returns the run's id (see ml.runs).
CREATE OR REPLACE FUNCTION ml.run_now(deployment text)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  d ml._deployments := ml._active_deployment(deployment);
BEGIN
  PERFORM ml._require_owner(d.source, format('run "%s"', d.name));
  RETURN ml._start_run(d.id, 'manual');
END
$$;

-- The worker's scheduler: starts the run of a batch deployment due at p_scheduled_for, unless
-- another worker is starting it right now (the 'schedule' task lock) or has started it (one run per
-- deployment and time). Returns the run's id, or NULL when this worker is not the one.
CREATE OR REPLACE FUNCTION ml._start_scheduled_run(p_id int, p_scheduled_for timestamptz)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  -- One worker at a time (sql/functions/027_locks.sql); the next finds the run started.
  PERFORM ml._lock_task('schedule');
  IF EXISTS (SELECT 1 FROM ml._runs r WHERE r.deployment_id = p_id AND r.scheduled_for = p_scheduled_for)
     OR NOT EXISTS (SELECT 1 FROM ml._deployments d WHERE d.id = p_id AND d.status = 'active' AND d.plan->>'mode' = 'batch') THEN
    RETURN NULL;
  END IF;
  RETURN ml._start_run(p_id, 'schedule', NULL, p_scheduled_for);
END
$$;

-- Rows of a run still queued (0 once its queue is gone).
CREATE OR REPLACE FUNCTION ml._run_remaining(r ml._runs)
RETURNS bigint
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_left bigint;
BEGIN
  IF r.state <> 'running' OR r.first_seq IS NULL OR to_regclass(format('ml.%I', '_queue_' || r.deployment_id)) IS NULL THEN
    RETURN 0;
  END IF;
  EXECUTE format('SELECT coalesce(sum(pgscore_n), 0) FROM ml.%I WHERE pgscore_priority = 1 AND pgscore_seq BETWEEN $1 AND $2',
                 '_queue_' || r.deployment_id)
    INTO v_left USING r.first_seq, r.last_seq;
  RETURN v_left;
END
$$;

-- Marks runs whose rows are all scored finished (with the dead letters they left), and runs of
-- deployments that were undeployed or whose table was dropped cancelled.
CREATE OR REPLACE FUNCTION ml._finish_runs()
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  r ml._runs;
BEGIN
  FOR r IN SELECT * FROM ml._runs x WHERE x.state = 'running' FOR UPDATE SKIP LOCKED LOOP
    IF NOT EXISTS (SELECT 1 FROM ml._deployments d WHERE d.id = r.deployment_id AND d.status <> 'dropped') THEN
      UPDATE ml._runs SET state = 'cancelled', finished_at = now() WHERE id = r.id;
    ELSIF ml._run_remaining(r) = 0 THEN
      UPDATE ml._runs SET state = 'finished', finished_at = now(),
             dead_letters = (SELECT count(*) FROM ml._dead_letters e WHERE e.deployment_id = r.deployment_id AND e.last_seen >= r.started_at)
       WHERE id = r.id;
    END IF;
  END LOOP;
END
$$;

DROP VIEW IF EXISTS ml.runs;
DROP FUNCTION IF EXISTS ml._runs();
CREATE FUNCTION ml._runs()
RETURNS TABLE (
  run bigint,
  deployment text,
  kind text,
  model text,
  state text,
  rows bigint,
  scored bigint,
  progress float8,
  rows_per_second float8,
  eta interval,
  dead_letters bigint,
  scheduled_for timestamptz,
  started_at timestamptz,
  finished_at timestamptz,
  filter text)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT r.id, r.deployment, r.kind, r.model, r.state, r.rows, x.scored,
         CASE WHEN r.rows = 0 THEN 1 ELSE x.scored::float8 / r.rows END,
         x.rate,
         CASE WHEN r.state = 'running' AND x.rate > 0 THEN (r.rows - x.scored) / x.rate * interval '1 second' END,
         coalesce(r.dead_letters,
                  (SELECT count(*) FROM ml._dead_letters e WHERE e.deployment_id = r.deployment_id AND e.last_seen >= r.started_at)),
         r.scheduled_for, r.started_at, r.finished_at, r.filter
    FROM ml._runs r,
         LATERAL (SELECT greatest(r.rows - ml._run_remaining(r), 0) AS scored) s,
         LATERAL (SELECT s.scored,
                         s.scored / nullif(extract(epoch FROM coalesce(r.finished_at, now()) - r.started_at), 0)::float8 AS rate) x
   WHERE ml._may_read_deployment(ml._reader(), r.deployment_id)
   ORDER BY r.id DESC
$$;

-- A run's counts and filter tell about the table's rows: shown to readers of the table (005).
CREATE VIEW ml.runs AS SELECT * FROM ml._runs() r WHERE ml._may_read_deployment_named(current_user, r.deployment);
