-- The prediction log (ml._prediction_batches: a row per logged batch, one partition per UTC day;
-- ml._predictions shows it a row per prediction), its upkeep, settings, and ml.compare, the
-- comparison of a deployment's versions built on it.

CREATE OR REPLACE FUNCTION ml._setting_defaults()
RETURNS TABLE (name text, value text, description text)
LANGUAGE sql IMMUTABLE
AS $$
  VALUES ('prediction_log_retention', '30 days', 'how long the prediction log keeps a day''s partition (an interval of at least 1 day)'),
         ('baseline_rows', '1000', 'how many first rows a worker summarises as the baseline of a model version that has none'),
         ('drift_min_rows', '500', 'how many live rows a feature needs in a window before ml.drift may flag it drifted')
$$;

CREATE OR REPLACE FUNCTION ml._setting(p_name text)
RETURNS text
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT coalesce((SELECT s.value FROM ml._settings s WHERE s.name = p_name),
                  (SELECT d.value FROM ml._setting_defaults() d WHERE d.name = p_name))
$$;

DROP VIEW IF EXISTS ml.settings;
CREATE VIEW ml.settings AS
SELECT d.name, ml._setting(d.name) AS value, d.value AS "default", d.description, s.updated_at
  FROM ml._setting_defaults() d LEFT JOIN ml._settings s ON s.name = d.name;

-- Changes a setting (see ml.settings); NULL puts back the default.
CREATE OR REPLACE FUNCTION ml.configure(setting text, value text)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
  v_interval interval;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM ml._setting_defaults() d WHERE d.name = setting) THEN
    RAISE EXCEPTION 'setting % does not exist', coalesce(quote_literal(setting), 'NULL')
      USING ERRCODE = 'undefined_object', HINT = format('Settings: %s.', (SELECT string_agg(d.name, ', ') FROM ml._setting_defaults() d));
  END IF;
  IF value IS NULL THEN
    DELETE FROM ml._settings s WHERE s.name = setting;
    RETURN ml._setting(setting);
  END IF;
  IF setting = 'prediction_log_retention' THEN
    BEGIN
      v_interval := value::interval;
    EXCEPTION WHEN OTHERS THEN
      RAISE EXCEPTION 'prediction_log_retention must be an interval like ''30 days'', not %', quote_literal(value)
        USING ERRCODE = 'invalid_parameter_value';
    END;
    IF v_interval < interval '1 day' THEN
      RAISE EXCEPTION 'prediction_log_retention must be at least 1 day (the log drops whole days), not %', quote_literal(value)
        USING ERRCODE = 'invalid_parameter_value';
    END IF;
  END IF;
  IF setting = 'baseline_rows' AND (value !~ '^\d{1,8}$' OR value::int < 10) THEN
    RAISE EXCEPTION 'baseline_rows must be a whole number of at least 10, not %', quote_literal(value)
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF setting = 'drift_min_rows' AND (value !~ '^\d{1,9}$' OR value::int < 1) THEN
    RAISE EXCEPTION 'drift_min_rows must be a whole number of at least 1, not %', quote_literal(value)
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  INSERT INTO ml._settings AS s (name, value) VALUES (setting, value)
  ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = now();
  PERFORM pg_notify('pgscore_config', 'settings');
  RETURN value;
END
$$;

-- Upkeep the workers run every minute (and migrate once): the prediction log's partitions for
-- yesterday to a week ahead exist, partitions past the retention are dropped, scoring
-- statistics older than an hour are trimmed, finished runs are marked. One worker at a time.
CREATE OR REPLACE FUNCTION ml._maintain()
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_day date;
  v_today date := (now() AT TIME ZONE 'UTC')::date;
  v_keep_from date := ((now() - ml._setting('prediction_log_retention')::interval) AT TIME ZONE 'UTC')::date;
  v_part record;
BEGIN
  IF NOT ml._lock_task('maintain', false) THEN
    RETURN;
  END IF;
  FOR v_day IN SELECT generate_series(greatest(v_today - 1, v_keep_from), v_today + 7, interval '1 day')::date LOOP
    IF to_regclass(format('ml.%I', '_prediction_batches_' || to_char(v_day, 'YYYYMMDD'))) IS NULL THEN
      EXECUTE format('CREATE TABLE ml.%I PARTITION OF ml._prediction_batches FOR VALUES FROM (%L) TO (%L)',
                     '_prediction_batches_' || to_char(v_day, 'YYYYMMDD'),
                     v_day::timestamp AT TIME ZONE 'UTC', (v_day + 1)::timestamp AT TIME ZONE 'UTC');
      -- Admins read the log through ml._prediction_batches, whose row security shows them only
      -- the tables they may read (090_privileges.sql): a partition grants them nothing.
    END IF;
  END LOOP;
  FOR v_part IN
    SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
     WHERE i.inhparent = 'ml._prediction_batches'::regclass
       AND c.relname ~ '^_prediction_batches_\d{8}$' AND to_date(substr(c.relname, 21), 'YYYYMMDD') < v_keep_from
  LOOP
    EXECUTE format('DROP TABLE ml.%I', v_part.relname);
  END LOOP;
  DELETE FROM ml._batches WHERE finished_at < now() - interval '1 hour';
  DELETE FROM ml._drift_counts WHERE minute < now() - interval '2 days';
  DELETE FROM ml._alert_events WHERE at < now() - interval '30 days';
  PERFORM ml._finish_runs();
END
$$;

-- How a logged prediction agrees with the live one for the same row: whether every label
-- output (integers, text, booleans) is equal, and the mean absolute difference of the number
-- outputs (real, double precision). Array outputs are not compared.
CREATE OR REPLACE FUNCTION ml._agreement(p_outputs jsonb, p_a jsonb, p_b jsonb, OUT same boolean, OUT diff float8)
LANGUAGE sql IMMUTABLE
AS $$
  SELECT bool_and(p_a->(o->>'column') = p_b->(o->>'column'))
           FILTER (WHERE o->>'sql_type' NOT IN ('real', 'double precision') AND NOT (o->>'array')::boolean),
         avg(abs((p_a->>(o->>'column'))::float8 - (p_b->>(o->>'column'))::float8))
           FILTER (WHERE o->>'sql_type' IN ('real', 'double precision'))
    FROM jsonb_array_elements(p_outputs) o
$$;

-- Per deployment and model version (live, each variant of a split, the shadow) over the log of
-- the last `since`: rows scored, rows a shadow scored that the live model scored too, their
-- agreement (share of rows with the same label) and mean absolute difference (number outputs),
-- the model's run time per row, dead letters, and, once labels exist (option "label"), the
-- accuracy of its predictions (ml.performance). ml.compare (the view) covers the last day.
DROP VIEW IF EXISTS ml.compare;
DROP FUNCTION IF EXISTS ml.compare(interval);
CREATE FUNCTION ml.compare(since interval DEFAULT interval '1 day')
RETURNS TABLE (
  deployment text,
  model text,
  role text,
  rows bigint,
  compared bigint,
  agreement float8,
  mean_abs_diff float8,
  score_us_per_row float8,
  dead_letters bigint,
  accuracy float8,
  first_scored timestamptz,
  last_scored timestamptz)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
  RETURN QUERY
  WITH p AS MATERIALIZED (
    SELECT * FROM ml._predictions x WHERE x.scored_at >= now() - since
  ), pairs AS (
    SELECT s.deployment_id, s.model, s.role, s.outputs, s.error, s.score_us, s.scored_at, l.outputs AS live_outputs
      FROM p s
      LEFT JOIN p l ON s.role = 'shadow' AND l.role <> 'shadow' AND l.error IS NULL
                   AND l.deployment_id = s.deployment_id AND l.scored_at = s.scored_at AND l.row_key = s.row_key
  ), quality AS (
    SELECT q.deployment, q.model, q.accuracy FROM ml._performance(ARRAY[since::text]) q
  )
  SELECT d.name, x.model, x.role, count(*),
         CASE WHEN x.role = 'shadow' THEN count(*) FILTER (WHERE a.same IS NOT NULL OR a.diff IS NOT NULL) END,
         avg(a.same::int)::float8, avg(a.diff), avg(x.score_us)::float8,
         count(*) FILTER (WHERE x.error IS NOT NULL),
         (SELECT q.accuracy FROM quality q WHERE q.deployment = d.name AND q.model = x.model),
         min(x.scored_at), max(x.scored_at)
    FROM pairs x
    JOIN ml._deployments d ON d.id = x.deployment_id
    LEFT JOIN LATERAL ml._agreement(d.plan->'outputs', x.outputs, x.live_outputs) a
           ON x.live_outputs IS NOT NULL AND x.error IS NULL
   WHERE ml._may_read(ml._reader(), d.source)
   GROUP BY d.name, x.model, x.role
   ORDER BY d.name, CASE x.role WHEN 'live' THEN 0 WHEN 'variant' THEN 1 ELSE 2 END, x.model;
END
$$;

CREATE VIEW ml.compare AS SELECT * FROM ml.compare() c WHERE ml._may_read_deployment_named(current_user, c.deployment);

-- The log a row per prediction (0007_prediction_batches.sql), of the tables the reader may read:
-- the view runs as its owner, whom row security does not restrict.
CREATE OR REPLACE VIEW ml._predictions AS
SELECT b.deployment_id, p.row_key, b.model, b.role, p.outputs, p.error, b.score_us, b.scored_at
  FROM ml._prediction_batches b
 CROSS JOIN LATERAL unnest(b.row_keys, b.outputs, b.errors) AS p(row_key, outputs, error)
 WHERE ml._may_read_deployment(current_user, b.deployment_id);
