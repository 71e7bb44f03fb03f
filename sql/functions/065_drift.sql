-- Data drift: baselines of what a model version was trained on (ml._baselines), the live values
-- the workers bin by them (ml._drift_counts), and ml.drift, the population stability index of
-- each input and output over the last hour and day.

-- The features of a model's inputs, in the order a baseline query gives them: one per value of
-- each tensor input, 'X[0]', 'X[1]', … for an [N, k] input, its name for an [N] input.
CREATE OR REPLACE FUNCTION ml._model_features(p_signature jsonb)
RETURNS TABLE (feature text, ord int)
LANGUAGE sql IMMUTABLE
AS $$
  SELECT f.feature, (row_number() OVER (ORDER BY i.n, f.j))::int
    FROM jsonb_array_elements(p_signature->'inputs') WITH ORDINALITY i(input, n)
    CROSS JOIN LATERAL (
      SELECT CASE WHEN jsonb_array_length(i.input->'shape') = 1 THEN i.input->>'name'
                  ELSE format('%s[%s]', i.input->>'name', j) END AS feature, j
        FROM generate_series(0, CASE WHEN jsonb_array_length(i.input->'shape') = 1 THEN 0
                                     ELSE coalesce((i.input->'shape'->>1)::int, 0) - 1 END) j) f
   WHERE (i.input->>'tensor')::boolean
$$;

-- Stores a baseline. A file or query replaces the version's input summaries (and keeps the
-- output summaries the worker took from its first predictions); the worker's first rows only
-- fill in what is missing. Returns whether anything was stored.
CREATE OR REPLACE FUNCTION ml._store_baseline(p_model text, p_version int, p_origin text, p_rows bigint, p_inputs jsonb, p_outputs jsonb)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  -- A worker may only fill in what its first rows found; replacing a baseline is an admin's call.
  IF p_origin <> 'first_rows' AND NOT pg_has_role(session_user, 'pgscore_admin', 'MEMBER') THEN
    RAISE EXCEPTION 'only members of pgscore_admin may set a baseline from a file or a query'
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF jsonb_typeof(p_inputs) IS DISTINCT FROM 'object' OR (p_outputs IS NOT NULL AND jsonb_typeof(p_outputs) <> 'object') THEN
    RAISE EXCEPTION 'a baseline maps feature names to summaries' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF p_origin = 'first_rows' THEN
    INSERT INTO ml._baselines AS b (model, version, origin, rows, inputs, outputs)
    VALUES (p_model, p_version, p_origin, p_rows, p_inputs, p_outputs)
    ON CONFLICT (model, version) DO UPDATE SET outputs = coalesce(b.outputs, excluded.outputs)
     WHERE b.outputs IS NULL AND excluded.outputs IS NOT NULL;
  ELSE
    INSERT INTO ml._baselines AS b (model, version, origin, rows, inputs, outputs)
    VALUES (p_model, p_version, p_origin, p_rows, p_inputs, p_outputs)
    ON CONFLICT (model, version) DO UPDATE
      SET origin = excluded.origin, rows = excluded.rows, inputs = excluded.inputs,
          outputs = coalesce(excluded.outputs, b.outputs), created_at = now();
  END IF;
  IF FOUND THEN
    -- Workers re-read baselines with their deployments.
    PERFORM pg_notify('pgscore_config', 'baseline');
  END IF;
  RETURN FOUND;
END
$$;

-- The baseline of a model version from a query over its training data, one column per feature
-- in the order of ml._model_features (for iris, the 4 columns of X). The query runs with the
-- caller's rights (this function is not SECURITY DEFINER). Returns the rows summarised.
CREATE OR REPLACE FUNCTION ml.set_baseline(model text, query text)
RETURNS bigint
LANGUAGE plpgsql
AS $$
#variable_conflict use_variable
DECLARE
  v_ref record := ml._parse_ref(model, '');
  v_version int := ml._resolve_version(v_ref.model, v_ref.version, v_ref.alias);
  v_features text[];
  v_columns record;
  v_count int;
  v_rows bigint;
  v_summary jsonb := '{}';
  v_one jsonb;
  i int := 0;
BEGIN
  SELECT array_agg(f.feature ORDER BY f.ord) INTO v_features
    FROM ml._model_features(ml._signature(v_ref.model, v_version)) f;
  DROP TABLE IF EXISTS pg_temp.pgscore_baseline;
  EXECUTE format('CREATE TEMP TABLE pgscore_baseline ON COMMIT DROP AS %s', query);
  SELECT count(*) INTO v_count FROM pg_catalog.pg_attribute a
   WHERE a.attrelid = 'pg_temp.pgscore_baseline'::regclass AND a.attnum > 0 AND NOT a.attisdropped;
  IF v_count <> coalesce(cardinality(v_features), 0) THEN
    RAISE EXCEPTION 'the baseline query gives % column(s), but %@% takes % feature(s): %', v_count, v_ref.model, v_version,
      coalesce(cardinality(v_features), 0), array_to_string(v_features, ', ')
      USING ERRCODE = 'datatype_mismatch', HINT = 'Select one column per feature, in that order.';
  END IF;
  EXECUTE 'SELECT count(*) FROM pg_temp.pgscore_baseline' INTO v_rows;
  IF v_rows = 0 THEN
    RAISE EXCEPTION 'the baseline query gives no rows' USING ERRCODE = 'no_data_found';
  END IF;
  FOR v_columns IN
    SELECT a.attname, t.typcategory FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
     WHERE a.attrelid = 'pg_temp.pgscore_baseline'::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum
  LOOP
    i := i + 1;
    IF v_columns.typcategory = 'N' THEN
      EXECUTE format($q$
        WITH v AS (SELECT %1$I::float8 AS x FROM pg_temp.pgscore_baseline),
             e AS (SELECT percentile_cont(ARRAY[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]) WITHIN GROUP (ORDER BY x) AS edges,
                          min(x) AS lo, max(x) AS hi, count(*) FILTER (WHERE x IS NULL OR x = 'NaN') AS nulls,
                          count(*) FILTER (WHERE x IS NOT NULL AND x <> 'NaN') AS n FROM v)
        SELECT jsonb_build_object('kind', 'numeric', 'edges', to_jsonb(e.edges), 'min', e.lo, 'max', e.hi, 'nulls', e.nulls,
                 'freqs', (SELECT jsonb_agg(coalesce(c.k, 0)::float8 / nullif(e.n, 0) ORDER BY b)
                             FROM generate_series(0, 9) b
                             LEFT JOIN (SELECT pg_catalog.width_bucket(v.x, e.edges) AS b, count(*) AS k FROM v
                                         WHERE v.x IS NOT NULL AND v.x <> 'NaN' GROUP BY 1) c USING (b)))
          FROM e$q$, v_columns.attname)
        INTO v_one;
    ELSE
      EXECUTE format($q$
        WITH v AS (SELECT %1$I::text AS x FROM pg_temp.pgscore_baseline),
             top AS (SELECT x, count(*) AS k FROM v WHERE x IS NOT NULL GROUP BY x ORDER BY count(*) DESC, x LIMIT 20),
             n AS (SELECT count(*) FILTER (WHERE x IS NOT NULL) AS n, count(*) FILTER (WHERE x IS NULL) AS nulls FROM v)
        SELECT jsonb_build_object('kind', 'categorical', 'nulls', n.nulls,
                 'categories', coalesce((SELECT jsonb_agg(x ORDER BY k DESC, x) FROM top), '[]'),
                 'freqs', coalesce((SELECT jsonb_agg(k::float8 / n.n ORDER BY k DESC, x) FROM top), '[]')
                          || to_jsonb((n.n - coalesce((SELECT sum(k) FROM top), 0))::float8 / nullif(n.n, 0)))
          FROM n$q$, v_columns.attname)
        INTO v_one;
    END IF;
    v_summary := v_summary || jsonb_build_object(v_features[i], v_one);
  END LOOP;
  DROP TABLE pg_temp.pgscore_baseline;
  PERFORM ml._store_baseline(v_ref.model, v_version, 'query', v_rows, v_summary, NULL);
  RETURN v_rows;
END
$$;

-- Adds a worker's counts of one minute (parallel arrays, one entry per deployment, model, kind
-- and feature; counts as array literals).
CREATE OR REPLACE FUNCTION ml._add_drift_counts(p_deployment int[], p_model text[], p_kind text[], p_feature text[],
                                                p_minute timestamptz[], p_counts text[], p_nulls bigint[], p_out bigint[], p_rows bigint[])
RETURNS void
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
  INSERT INTO ml._drift_counts AS d (deployment_id, model, kind, feature, minute, counts, nulls, out_of_range, rows)
  SELECT u.deployment, u.model, u.kind, u.feature, u.minute, u.counts::bigint[], u.nulls, u.out_of_range, u.rows
    FROM unnest(p_deployment, p_model, p_kind, p_feature, p_minute, p_counts, p_nulls, p_out, p_rows)
         AS u(deployment, model, kind, feature, minute, counts, nulls, out_of_range, rows)
   WHERE EXISTS (SELECT 1 FROM ml._deployments x WHERE x.id = u.deployment)
  ON CONFLICT (deployment_id, model, kind, feature, minute) DO UPDATE
    SET counts = ARRAY(SELECT a + b FROM unnest(d.counts, excluded.counts) z(a, b)),
        nulls = d.nulls + excluded.nulls, out_of_range = d.out_of_range + excluded.out_of_range, rows = d.rows + excluded.rows
$$;

-- The population stability index of live shares a against baseline shares e (both floored at
-- 1e-4, so an empty bucket counts as rare, not impossible): Σ (a − e) · ln(a / e).
CREATE OR REPLACE FUNCTION ml._psi(p_counts float8[], p_freqs float8[])
RETURNS float8
LANGUAGE sql IMMUTABLE
AS $$
  SELECT sum((a - e) * ln(a / e))
    FROM (SELECT greatest(c / nullif(sum(c) OVER (), 0), 1e-4) AS a, greatest(coalesce(f, 0), 1e-4) AS e
            FROM unnest(p_counts, p_freqs) u(c, f)) x
$$;

-- Per deployment, model version (each variant), input or output feature and window (the last
-- hour, the last day): the live rows, their PSI against the version's baseline, the share of
-- NULL or NaN values and of values outside the baseline's range, and whether the PSI is above
-- the deployment's "drift_threshold" (default 0.2).
-- Its arguments changed: drop and create (the view is created again below).
DROP VIEW IF EXISTS ml.drift;
DROP FUNCTION IF EXISTS ml._drift();
CREATE OR REPLACE FUNCTION ml._drift(p_windows text[] DEFAULT ARRAY['1 hour', '1 day'])
RETURNS TABLE (
  deployment text,
  model text,
  kind text,
  feature text,
  "window" text,
  rows bigint,
  psi float8,
  null_share float8,
  out_of_range_share float8,
  threshold float8,
  drifted boolean)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
  WITH windows(name, span) AS (SELECT w, w::interval FROM unnest(p_windows) w),
  totals AS (
    SELECT w.name, c.deployment_id, c.model, c.kind, c.feature,
           sum(c.rows)::bigint AS rows, sum(c.nulls)::float8 AS nulls, sum(c.out_of_range)::float8 AS out_of_range
      FROM windows w JOIN ml._drift_counts c ON c.minute >= now() - w.span
     GROUP BY 1, 2, 3, 4, 5
  ), cells AS (
    SELECT w.name, c.deployment_id, c.model, c.kind, c.feature, u.i, sum(u.v)::float8 AS v
      FROM windows w JOIN ml._drift_counts c ON c.minute >= now() - w.span,
           unnest(c.counts) WITH ORDINALITY u(v, i)
     GROUP BY 1, 2, 3, 4, 5, 6
  ), live AS (
    SELECT name, deployment_id, model, kind, feature, array_agg(v ORDER BY i) AS counts FROM cells GROUP BY 1, 2, 3, 4, 5
  )
  SELECT d.name, t.model, t.kind, t.feature, t.name, t.rows,
         ml._psi(l.counts, ARRAY(SELECT jsonb_array_elements_text(s.summary->'freqs')::float8)),
         t.nulls / nullif(t.rows, 0), t.out_of_range / nullif(t.rows, 0),
         coalesce((d.options->>'drift_threshold')::float8, 0.2),
         ml._psi(l.counts, ARRAY(SELECT jsonb_array_elements_text(s.summary->'freqs')::float8))
           > coalesce((d.options->>'drift_threshold')::float8, 0.2)
    FROM totals t
    JOIN live l USING (name, deployment_id, model, kind, feature)
    JOIN ml._deployments d ON d.id = t.deployment_id
    JOIN ml._baselines b ON b.model || '@' || b.version = t.model
    CROSS JOIN LATERAL (SELECT CASE t.kind WHEN 'input' THEN b.inputs ELSE b.outputs END -> t.feature AS summary) s
   WHERE s.summary IS NOT NULL AND ml._may_read(ml._reader(), d.source)
   ORDER BY d.name, t.model, t.kind DESC, t.feature, t.name
$$;

CREATE VIEW ml.drift AS SELECT * FROM ml._drift() x WHERE ml._may_read_deployment_named(current_user, x.deployment);
