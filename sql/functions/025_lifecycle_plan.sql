-- Deploy options and the lifecycle part of a plan: a split's variants, a shadow model, the
-- prediction log's sampling, batch mode with its schedule, a side-table target.
--
-- Options (each checked by ml._check_options at deploy, with the reason when it is refused):
--   backfill            boolean  queue the table's rows at deploy (default true)
--   provenance          boolean  record "<deployment>_model" and "<deployment>_scored_at" (default true)
--   variants            object   {"churn@3": 90, "churn@4": 10}: serve several versions, rows
--                                assigned by a stable hash of the primary key (see ml.split)
--   shadow              text     'churn@staging': score every row with it too, into the prediction log only
--   log_sample          number   share of the live model's predictions written to the prediction log (default 1)
--   mode                text     'live' (triggers, default) or 'batch' (no triggers; runs only)
--   schedule            text     cron expression of a batch deployment's runs, e.g. '0 2 * * *'
--   timezone            text     the schedule's time zone (default UTC)
--   filter              text     condition on the table: the rows a run scores (default all)
--   target              text     table the predictions are appended to instead of the source
--   rescore_on_promote  boolean  after ml.promote, queue every row again as a run
--   drift               boolean  count live values against the version's baseline for ml.drift (default true)
--   drift_threshold     number   PSI above which ml.drift flags a feature (default 0.2)
--   label               text     column the application fills with the truth later (ml.performance)
--   quality_margin      number   drop of live quality below the version's validation figures that flags it (default 0.05)
--   capture             text     'trigger' (statement triggers, default) or 'wal' (logical replication, 032_capture.sql)

-- Parses a model reference: 'churn' follows production, 'churn@3' pins version 3,
-- 'churn@staging' follows an alias. p_what names the reference in messages ('shadow ', ...).
CREATE OR REPLACE FUNCTION ml._parse_ref(p_ref text, p_what text, OUT model text, OUT version int, OUT alias text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_ref text[] := regexp_match(coalesce(p_ref, ''), '^([^@]+)(?:@(.+))?$');
BEGIN
  IF v_ref IS NULL THEN
    RAISE EXCEPTION '%model reference % is not valid', p_what, coalesce(quote_literal(p_ref), 'NULL')
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Use ''name'', ''name@3'' or ''name@staging''.';
  END IF;
  model := v_ref[1];
  IF NOT EXISTS (SELECT 1 FROM ml._models m WHERE m.name = model) THEN
    RAISE EXCEPTION '%model "%" is not registered', p_what, model
      USING ERRCODE = 'no_data_found', HINT = 'Register it with ml.register_model or `pgscore model push`.';
  END IF;
  IF v_ref[2] ~ '^\d+$' THEN
    version := v_ref[2]::int;
    IF NOT EXISTS (SELECT 1 FROM ml._models m WHERE m.name = model AND m.version = _parse_ref.version) THEN
      RAISE EXCEPTION '%model %@% does not exist (versions: %)', p_what, model, version,
        (SELECT string_agg(m.version::text, ', ' ORDER BY m.version) FROM ml._models m WHERE m.name = model)
        USING ERRCODE = 'no_data_found';
    END IF;
  ELSE
    alias := coalesce(v_ref[2], 'production');
    IF NOT EXISTS (SELECT 1 FROM ml._aliases a WHERE a.model = _parse_ref.model AND a.alias = _parse_ref.alias) THEN
      RAISE EXCEPTION '%model % has no alias "%"', p_what, model, alias
        USING ERRCODE = 'no_data_found', HINT = 'Point it at a version with ml.promote.';
    END IF;
  END IF;
END
$$;

-- Whether a cron expression is valid: five fields (minute hour day-of-month month day-of-week),
-- each a list of *, values, ranges and steps (names for months and days), or a macro like @daily.
-- The worker reads it with cron-parser; this check refuses what it would refuse, at deploy.
CREATE OR REPLACE FUNCTION ml._check_cron(p_cron text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_fields text[] := regexp_split_to_array(btrim(coalesce(p_cron, '')), '\s+');
  v_names text[] := ARRAY['minute', 'hour', 'day of month', 'month', 'day of week'];
  v_min int[] := ARRAY[0, 0, 1, 1, 0];
  v_max int[] := ARRAY[59, 23, 31, 12, 7];
  v_words text[] := ARRAY[NULL, NULL, NULL, 'jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec', 'sun|mon|tue|wed|thu|fri|sat'];
  v_item text;
  v_m text[];
  v_i int;
  v_value text;
BEGIN
  IF lower(btrim(coalesce(p_cron, ''))) IN ('@yearly', '@annually', '@monthly', '@weekly', '@daily', '@midnight', '@hourly') THEN
    RETURN;
  END IF;
  IF cardinality(v_fields) <> 5 THEN
    RAISE EXCEPTION 'schedule % is not a cron expression: it has % field(s), a cron expression has 5 (minute hour day-of-month month day-of-week)',
      coalesce(quote_literal(p_cron), 'NULL'), cardinality(v_fields)
      USING ERRCODE = 'invalid_parameter_value', HINT = 'For example ''0 2 * * *'' (every day at 02:00) or ''@hourly''.';
  END IF;
  FOR v_i IN 1 .. 5 LOOP
    FOREACH v_item IN ARRAY string_to_array(v_fields[v_i], ',') LOOP
      v_m := regexp_match(lower(v_item), '^(\*|[0-9a-z]+)(?:-([0-9a-z]+))?(?:/([0-9]+))?$');
      IF v_m IS NULL OR (v_m[3] IS NOT NULL AND v_m[3]::int = 0) THEN
        RAISE EXCEPTION 'schedule %: % field "%" is not valid', quote_literal(p_cron), v_names[v_i], v_fields[v_i]
          USING ERRCODE = 'invalid_parameter_value', HINT = 'Use *, a value, a range a-b, a list a,b or a step */n.';
      END IF;
      FOREACH v_value IN ARRAY ARRAY[v_m[1], v_m[2]] LOOP
        CONTINUE WHEN v_value IS NULL OR v_value = '*';
        IF v_value ~ '^\d+$' THEN
          IF v_value::bigint NOT BETWEEN v_min[v_i] AND v_max[v_i] THEN
            RAISE EXCEPTION 'schedule %: % % is out of range (%-%)', quote_literal(p_cron), v_names[v_i], v_value, v_min[v_i], v_max[v_i]
              USING ERRCODE = 'invalid_parameter_value';
          END IF;
        ELSIF v_words[v_i] IS NULL OR v_value !~ ('^(' || v_words[v_i] || ')$') THEN
          RAISE EXCEPTION 'schedule %: % field "%" is not valid', quote_literal(p_cron), v_names[v_i], v_fields[v_i]
            USING ERRCODE = 'invalid_parameter_value';
        END IF;
      END LOOP;
    END LOOP;
  END LOOP;
END
$$;

-- Whether the worker can read schedules in a time zone of pg_timezone_names: it computes them with
-- cron-parser, which takes the IANA zones of Node's Intl. Postgres also lists its own pseudo-zone
-- 'Factory' and, with a system tzdata, the posix/ and right/ copies, which Intl refuses. A test
-- checks every zone of pg_timezone_names against cron-parser, so both sides keep agreeing.
CREATE OR REPLACE FUNCTION ml._worker_timezone(p_name text)
RETURNS boolean
LANGUAGE sql IMMUTABLE
AS $$
  SELECT p_name !~ '^(Factory|posixrules|localtime)$' AND p_name !~ '^(posix|right|SystemV)/'
$$;

CREATE OR REPLACE FUNCTION ml._check_options(p_options jsonb)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_key text;
  v_value jsonb;
  v_kind text;
  v_total numeric := 0;
BEGIN
  IF p_options IS NULL OR jsonb_typeof(p_options) <> 'object' THEN
    RAISE EXCEPTION 'options must be a JSON object' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  FOR v_key, v_value IN SELECT * FROM jsonb_each(p_options) LOOP
    v_kind := CASE
      WHEN v_key IN ('backfill', 'provenance', 'rescore_on_promote', 'drift') THEN 'boolean'
      WHEN v_key IN ('shadow', 'schedule', 'timezone', 'filter', 'target', 'mode', 'row_security', 'capture') THEN 'string'
      WHEN v_key IN ('log_sample', 'drift_threshold', 'quality_margin') THEN 'number'
      WHEN v_key = 'label' THEN 'string'
      WHEN v_key = 'variants' THEN 'object' END;
    IF v_kind IS NULL THEN
      RAISE EXCEPTION 'option "%" is not supported by this version of pgscore', v_key
        USING ERRCODE = 'feature_not_supported',
              HINT = 'Supported options: backfill, provenance, variants, shadow, log_sample, mode, schedule, timezone, filter, target, rescore_on_promote, drift, drift_threshold, label, quality_margin, row_security, capture.';
    END IF;
    IF jsonb_typeof(v_value) <> v_kind THEN
      RAISE EXCEPTION 'option "%" must be %, not %', v_key,
        CASE v_kind WHEN 'boolean' THEN 'true or false' WHEN 'string' THEN 'a string' WHEN 'number' THEN 'a number'
             ELSE 'an object of model versions and weights, like {"churn@3": 90, "churn@4": 10}' END, v_value
        USING ERRCODE = 'invalid_parameter_value';
    END IF;
  END LOOP;

  IF p_options ? 'log_sample' AND (p_options->>'log_sample')::numeric NOT BETWEEN 0 AND 1 THEN
    RAISE EXCEPTION 'option "log_sample" must be between 0 and 1 (the share of predictions logged), not %', p_options->'log_sample'
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF p_options ? 'drift_threshold' AND (p_options->>'drift_threshold')::numeric <= 0 THEN
    RAISE EXCEPTION 'option "drift_threshold" must be above 0 (a PSI; 0.2 by default), not %', p_options->'drift_threshold'
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF p_options ? 'quality_margin' AND (p_options->>'quality_margin')::numeric NOT BETWEEN 0 AND 1 THEN
    RAISE EXCEPTION 'option "quality_margin" must be between 0 and 1, not %', p_options->'quality_margin'
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF p_options ? 'variants' THEN
    IF NOT (SELECT count(*) BETWEEN 1 AND 10 FROM jsonb_object_keys(p_options->'variants')) THEN
      RAISE EXCEPTION 'option "variants" must name between 1 and 10 model versions' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR v_key, v_value IN SELECT * FROM jsonb_each(p_options->'variants') LOOP
      PERFORM ml._parse_ref(v_key, 'variant ');
      IF jsonb_typeof(v_value) <> 'number' OR v_value::text::numeric < 0 THEN
        RAISE EXCEPTION 'variant "%" has weight %; a weight is a number of 0 or more', v_key, v_value
          USING ERRCODE = 'invalid_parameter_value';
      END IF;
      v_total := v_total + v_value::text::numeric;
    END LOOP;
    IF v_total <= 0 THEN
      RAISE EXCEPTION 'the weights of option "variants" add up to 0; at least one must be above 0' USING ERRCODE = 'invalid_parameter_value';
    END IF;
  END IF;
  IF p_options ? 'shadow' THEN
    PERFORM ml._parse_ref(p_options->>'shadow', 'shadow ');
  END IF;
  IF coalesce(p_options->>'mode', 'live') NOT IN ('live', 'batch') THEN
    RAISE EXCEPTION 'option "mode" must be ''live'' or ''batch'', not %', p_options->'mode' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF coalesce(p_options->>'capture', 'trigger') NOT IN ('trigger', 'wal') THEN
    RAISE EXCEPTION 'option "capture" must be ''trigger'' or ''wal'', not %', p_options->'capture' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF p_options->>'capture' = 'wal' AND p_options->>'mode' = 'batch' THEN
    RAISE EXCEPTION 'option "capture" applies to live deployments: a batch deployment''s rows are queued by its runs'
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF coalesce(p_options->>'mode', 'live') <> 'batch' THEN
    FOREACH v_key IN ARRAY ARRAY['schedule', 'timezone'] LOOP
      IF p_options ? v_key THEN
        RAISE EXCEPTION 'option "%" needs "mode": "batch"', v_key
          USING ERRCODE = 'invalid_parameter_value', HINT = 'A live deployment scores rows as they are written; a batch deployment scores them on a schedule.';
      END IF;
    END LOOP;
  END IF;
  IF p_options ? 'schedule' THEN
    PERFORM ml._check_cron(p_options->>'schedule');
  END IF;
  IF p_options ? 'timezone' AND NOT EXISTS (SELECT 1 FROM pg_timezone_names WHERE name = p_options->>'timezone') THEN
    RAISE EXCEPTION 'option "timezone": % is not a time zone Postgres knows', p_options->'timezone'
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Use a name from pg_timezone_names, like ''Europe/Paris''.';
  END IF;
  IF p_options ? 'timezone' AND NOT ml._worker_timezone(p_options->>'timezone') THEN
    RAISE EXCEPTION 'option "timezone": % is not a time zone the worker can read', p_options->'timezone'
      USING ERRCODE = 'invalid_parameter_value',
            HINT = 'The worker reads schedules with the IANA zones of Node''s Intl; Factory, posixrules, localtime and the posix/ and right/ copies are not among them. Use a zone like ''Europe/Paris''.';
  END IF;
  IF p_options ? 'row_security' AND p_options->>'row_security' <> 'worker_sees_all' THEN
    RAISE EXCEPTION 'option "row_security" must be ''worker_sees_all'', not %', p_options->'row_security'
      USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Set it only on a table with row-level security after adding a policy that lets pgscore_worker see every row.';
  END IF;
END
$$;

-- Whether a deployment follows an alias of a model: with its own model, one of its variants or its shadow.
CREATE OR REPLACE FUNCTION ml._follows(d ml._deployments, p_model text, p_alias text)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT (d.model = p_model AND d.alias = p_alias)
      OR EXISTS (SELECT 1 FROM jsonb_object_keys(coalesce(d.options->'variants', '{}')) k
                  WHERE k IN (p_model || '@' || p_alias, CASE WHEN p_alias = 'production' THEN p_model END))
      OR d.options->>'shadow' IN (p_model || '@' || p_alias, CASE WHEN p_alias = 'production' THEN p_model END)
$$;

-- Resolves a variant or shadow reference and checks that it scores with the deployment's
-- mapping exactly as its own model does (the same inputs read, the same columns written).
CREATE OR REPLACE FUNCTION ml._plan_model(d ml._deployments, p_ref text, p_what text, p_plan jsonb, p_inputs jsonb, p_outputs jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_ref record := ml._parse_ref(p_ref, p_what || ' ');
  v_version int := ml._resolve_version(v_ref.model, v_ref.version, v_ref.alias);
  v_name text := format('%s@%s', v_ref.model, v_version);
  v_plan jsonb;
BEGIN
  BEGIN
    v_plan := ml._plan(d.source, v_name, ml._signature(v_ref.model, v_version), p_inputs, p_outputs);
  EXCEPTION WHEN OTHERS THEN
    RAISE EXCEPTION '% % does not fit the deployment: %', p_what, v_name, SQLERRM USING ERRCODE = SQLSTATE;
  END;
  IF v_plan->'inputs' <> p_plan->'inputs' THEN
    RAISE EXCEPTION '% % does not take the inputs of the deployment''s model: it needs %, the deployment reads %', p_what, v_name,
      ml._describe_inputs(v_plan->'inputs'), ml._describe_inputs(p_plan->'inputs')
      USING ERRCODE = 'datatype_mismatch',
            HINT = 'Variants and shadows share the deployment''s mapping: export them with the same input names, types and shapes.';
  END IF;
  IF (SELECT jsonb_agg(o - 'exists' - 'attnum' ORDER BY o->>'column') FROM jsonb_array_elements(v_plan->'outputs') o)
     <> (SELECT jsonb_agg(o - 'exists' - 'attnum' ORDER BY o->>'column') FROM jsonb_array_elements(p_plan->'outputs') o) THEN
    RAISE EXCEPTION '% % does not give the outputs of the deployment''s model: it writes %, the deployment writes %', p_what, v_name,
      ml._describe_outputs(v_plan->'outputs'), ml._describe_outputs(p_plan->'outputs')
      USING ERRCODE = 'datatype_mismatch',
            HINT = 'Variants and shadows share the deployment''s mapping: export them with the same output names, types and shapes.';
  END IF;
  RETURN jsonb_build_object('model', v_ref.model, 'version', v_version, 'ref', v_name);
END
$$;

CREATE OR REPLACE FUNCTION ml._describe_inputs(p_inputs jsonb)
RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
  SELECT string_agg(format('%s %s[%s]', i->>'name', i->>'type', coalesce(i->>'width', '?')), ', ' ORDER BY n)
    FROM jsonb_array_elements(p_inputs) WITH ORDINALITY x(i, n)
$$;

CREATE OR REPLACE FUNCTION ml._describe_outputs(p_outputs jsonb)
RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
  SELECT string_agg(format('%s = %s%s (%s)', o->>'column', o->>'output', coalesce('[' || (o->>'index') || ']', ''), o->>'sql_type'), ', ' ORDER BY o->>'column')
    FROM jsonb_array_elements(p_outputs) o
$$;

-- The lifecycle part of a deployment's plan, from its options: {"mode", "log_sample",
-- "variants": [{"model", "version", "ref", "weight"}] or null, "shadow": {"model", "version", "ref"}
-- or null, "schedule", "timezone", "filter"}. Variants and shadows are resolved to versions here,
-- so ml.promote (which re-plans the deployments that follow the alias) moves them too.
CREATE OR REPLACE FUNCTION ml._plan_lifecycle(d ml._deployments, p_plan jsonb, p_inputs jsonb, p_outputs jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_variants jsonb;
  v_shadow jsonb;
  v_filter jsonb;
  v_label jsonb;
BEGIN
  IF d.options ? 'variants' THEN
    SELECT jsonb_agg(ml._plan_model(d, e.key, 'variant', p_plan, p_inputs, p_outputs)
                     || jsonb_build_object('weight', e.value::text::float8) ORDER BY e.key)
      INTO v_variants
      FROM jsonb_each(d.options->'variants') e;
  END IF;
  IF d.options ? 'shadow' THEN
    v_shadow := ml._plan_model(d, d.options->>'shadow', 'shadow', p_plan, p_inputs, p_outputs);
  END IF;
  IF d.options ? 'filter' THEN
    v_filter := ml._check_expression(d.source, 'option "filter"', d.options->>'filter');
    IF (v_filter->>'type')::oid <> 'boolean'::regtype THEN
      RAISE EXCEPTION 'option "filter" (%) is not a condition (it gives %)', d.options->>'filter', format_type((v_filter->>'type')::oid, NULL)
        USING ERRCODE = 'datatype_mismatch', HINT = 'Give a condition on the table''s columns, like "active".';
    END IF;
  END IF;
  IF d.options ? 'label' THEN
    v_label := ml._plan_label(d, p_plan);
  END IF;
  RETURN jsonb_build_object(
    'label', v_label,
    'drift', coalesce((d.options->>'drift')::boolean, true),
    'mode', coalesce(d.options->>'mode', 'live'),
    'log_sample', coalesce((d.options->>'log_sample')::float8, 1),
    'variants', v_variants,
    'shadow', v_shadow,
    'schedule', d.options->'schedule',
    'timezone', coalesce(d.options->>'timezone', 'UTC'),
    'filter', d.options->'filter');
END
$$;

-- The parts of a plan that pgscore installs on the table (queue, trigger function, triggers,
-- grants); a change elsewhere (weights, shadow, sampling, schedule) re-installs nothing.
CREATE OR REPLACE FUNCTION ml._installed_part(p_plan jsonb)
RETURNS jsonb
LANGUAGE sql IMMUTABLE
AS $$
  SELECT p_plan - 'log_sample' - 'variants' - 'shadow' - 'schedule' - 'timezone' - 'filter' - 'label' - 'drift'
$$;

-- A target table's schema and name: an unqualified name is in the source's schema.
CREATE OR REPLACE FUNCTION ml._target_name(p_source oid, p_target text, OUT schema text, OUT name text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_parts text[];
BEGIN
  BEGIN
    v_parts := parse_ident(p_target);
  EXCEPTION WHEN OTHERS THEN
    RAISE EXCEPTION 'option "target": % is not a table name', quote_literal(p_target) USING ERRCODE = 'invalid_parameter_value';
  END;
  IF cardinality(v_parts) NOT IN (1, 2) THEN
    RAISE EXCEPTION 'option "target": % is not a table name (use "name" or "schema.name")', quote_literal(p_target)
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  schema := CASE WHEN cardinality(v_parts) = 2 THEN v_parts[1]
                 ELSE (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = p_source) END;
  name := v_parts[cardinality(v_parts)];
END
$$;

-- The side table of a deployment with options => '{"target": "churn_weekly"}': predictions are
-- appended to it (key columns, prediction columns, "model", "scored_at") instead of written into
-- the source rows, which stay untouched. An unqualified name is in the source's schema. It is
-- created (owned by the source's owner) when missing and p_create; an existing one must have
-- those columns with types that hold them. Returns {"table": quoted name, "oid", "attnums": {column: attnum}}.
CREATE OR REPLACE FUNCTION ml._plan_target(d ml._deployments, p_plan jsonb, p_create boolean)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_schema text;
  v_name text;
  v_oid oid;
  v_col record;
  v_found record;
BEGIN
  SELECT t.schema, t.name INTO v_schema, v_name FROM ml._target_name(d.source, d.options->>'target') t;
  v_oid := to_regclass(format('%I.%I', v_schema, v_name));
  IF v_oid = d.source THEN
    RAISE EXCEPTION 'option "target" names the source table itself' USING ERRCODE = 'invalid_parameter_value',
      HINT = 'Leave "target" out to write predictions into the source rows.';
  END IF;

  IF v_oid IS NULL THEN
    IF NOT p_create THEN
      RAISE EXCEPTION 'target table %.% does not exist', quote_ident(v_schema), quote_ident(v_name) USING ERRCODE = 'undefined_table',
        HINT = 'Deploy again (ml.deploy with the same name) to create it.';
    END IF;
    -- This runs as the schema owner: the caller must be allowed to create the table themselves.
    IF v_schema IN ('ml', 'pg_catalog', 'information_schema') OR NOT has_schema_privilege(session_user, v_schema, 'CREATE') THEN
      RAISE EXCEPTION 'option "target": % may not create tables in schema %', session_user, quote_ident(v_schema)
        USING ERRCODE = 'insufficient_privilege', HINT = 'Name a table in a schema you may create tables in, or create it first.';
    END IF;
    EXECUTE format('CREATE TABLE %I.%I (%s, model text NOT NULL, scored_at timestamptz NOT NULL DEFAULT now())', v_schema, v_name,
      (SELECT string_agg(c, ', ' ORDER BY n) FROM (
         SELECT format('%I %s NOT NULL', k->>'column', k->>'type') AS c, n FROM jsonb_array_elements(p_plan->'keys') WITH ORDINALITY x(k, n)
         UNION ALL
         SELECT format('%I %s', o->>'column', o->>'sql_type'), 1000 + n FROM jsonb_array_elements(p_plan->'outputs') WITH ORDINALITY x(o, n)) t));
    v_oid := format('%I.%I', v_schema, v_name)::regclass;
    EXECUTE format('CREATE INDEX ON %s (%s, scored_at)', v_oid::regclass,
      (SELECT string_agg(format('%I', k->>'column'), ', ') FROM jsonb_array_elements(p_plan->'keys') k));
    EXECUTE format('ALTER TABLE %s OWNER TO %I', v_oid::regclass,
      (SELECT r.rolname FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner WHERE c.oid = d.source));
  ELSIF (SELECT c.relkind FROM pg_class c WHERE c.oid = v_oid) NOT IN ('r', 'p') THEN
    RAISE EXCEPTION 'target % is not a table', v_oid::regclass USING ERRCODE = 'wrong_object_type';
  END IF;

  FOR v_col IN
    SELECT k->>'column' AS name, k->>'type' AS type, 'a key column of the source' AS what, false AS is_output FROM jsonb_array_elements(p_plan->'keys') k
    UNION ALL SELECT o->>'column', o->>'sql_type', format('output "%s"', o->>'output'), true FROM jsonb_array_elements(p_plan->'outputs') o
    UNION ALL SELECT 'model', 'text', 'the model version', false
    UNION ALL SELECT 'scored_at', 'timestamp with time zone', 'the scoring time', false
  LOOP
    SELECT a.attnum, format_type(a.atttypid, a.atttypmod) AS type INTO v_found
      FROM pg_attribute a WHERE a.attrelid = v_oid AND a.attname = v_col.name AND a.attnum > 0 AND NOT a.attisdropped;
    IF NOT FOUND THEN
      RAISE EXCEPTION 'target table % has no column "%" (for %, %)', v_oid::regclass, v_col.name, v_col.what, v_col.type
        USING ERRCODE = 'undefined_column', HINT = 'Add it, or name a table that does not exist yet and ml.deploy creates it.';
    END IF;
    IF v_found.type <> v_col.type AND NOT (v_col.name = 'model' AND v_found.type = 'character varying')
       AND NOT (v_col.is_output AND v_found.type IN ('double precision', 'numeric') AND v_col.type IN ('real', 'smallint', 'integer', 'bigint'))
       AND NOT (v_col.is_output AND v_found.type = 'bigint' AND v_col.type IN ('smallint', 'integer')) THEN
      RAISE EXCEPTION 'column "%" of target table % is %, but it holds % (%)', v_col.name, v_oid::regclass, v_found.type, v_col.what, v_col.type
        USING ERRCODE = 'datatype_mismatch';
    END IF;
  END LOOP;

  RETURN jsonb_build_object('table', format('%I.%I', (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = v_oid),
                                           (SELECT c.relname FROM pg_class c WHERE c.oid = v_oid)),
                            'oid', v_oid::bigint,
                            'attnums', (SELECT jsonb_object_agg(a.attname, a.attnum) FROM pg_attribute a
                                         WHERE a.attrelid = v_oid AND a.attnum > 0 AND NOT a.attisdropped));
END
$$;

-- The worker's rights on a target table: INSERT, while an active deployment appends to it.
CREATE OR REPLACE FUNCTION ml._grant_worker_target(p_target oid)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_schema name;
  v_wanted boolean;
BEGIN
  IF p_target IS NULL OR NOT EXISTS (SELECT 1 FROM pg_class WHERE oid = p_target) THEN
    RETURN;
  END IF;
  v_wanted := EXISTS (SELECT 1 FROM ml._deployments d WHERE d.status = 'active' AND (d.plan->'target'->>'oid')::oid = p_target);
  -- Already right: no GRANT or REVOKE, which would lock the table. A re-check holding the
  -- deployment's row must not wait for a DROP TABLE of the side table, whose event trigger
  -- waits for that row (a deadlock).
  IF v_wanted = has_table_privilege('pgscore_worker', p_target, 'INSERT')
     AND NOT has_table_privilege('pgscore_worker', p_target, 'SELECT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER') THEN
    RETURN;
  END IF;
  EXECUTE format('REVOKE ALL ON %s FROM pgscore_worker', p_target::regclass);
  IF v_wanted THEN
    SELECT n.nspname INTO v_schema FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = p_target;
    PERFORM ml._lock_task('grants:' || v_schema);
    IF NOT has_schema_privilege('pgscore_worker', v_schema, 'USAGE') THEN
      EXECUTE format('GRANT USAGE ON SCHEMA %I TO pgscore_worker', v_schema);
    END IF;
    EXECUTE format('GRANT INSERT ON %s TO pgscore_worker', p_target::regclass);
  END IF;
END
$$;

-- Concept drift: the label column a deployment's predictions are compared with once the
-- application fills it in, and which prediction columns hold what: the predicted label (an
-- integer, text or boolean output), the positive class's probability ('probabilities[1]') for
-- log loss and AUC, or, for a regressor, the predicted number.
CREATE OR REPLACE FUNCTION ml._plan_label(d ml._deployments, p_plan jsonb)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_column text := d.options->>'label';
  v_attr record;
  v_predicted text;
  v_score text;
  v_number text;
BEGIN
  SELECT a.attnum, format_type(a.atttypid, a.atttypmod) AS type INTO v_attr
    FROM pg_attribute a WHERE a.attrelid = d.source AND a.attname = v_column AND a.attnum > 0 AND NOT a.attisdropped;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'option "label": % has no column "%"', ml._relname(d.source), v_column
      USING ERRCODE = 'undefined_column', HINT = 'Add the column the application fills with the truth (it may stay NULL until then).';
  END IF;
  IF v_column IN (SELECT o->>'column' FROM jsonb_array_elements(p_plan->'outputs') o) THEN
    RAISE EXCEPTION 'option "label": column "%" holds predictions; the label is the truth they are compared with', v_column
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  SELECT o->>'column' INTO v_predicted FROM jsonb_array_elements(p_plan->'outputs') o
   WHERE NOT (o->>'array')::boolean AND o->>'sql_type' NOT IN ('real', 'double precision') LIMIT 1;
  SELECT o->>'column' INTO v_score FROM jsonb_array_elements(p_plan->'outputs') o
   WHERE NOT (o->>'array')::boolean AND o->>'sql_type' IN ('real', 'double precision') AND (o->>'index')::int = 1
     AND coalesce((o->>'width')::int, 2) = 2 LIMIT 1;
  SELECT o->>'column' INTO v_number FROM jsonb_array_elements(p_plan->'outputs') o
   WHERE NOT (o->>'array')::boolean AND o->>'sql_type' IN ('real', 'double precision') LIMIT 1;
  IF v_predicted IS NULL AND v_number IS NULL THEN
    RAISE EXCEPTION 'option "label": the deployment writes no predicted label or number to compare with column "%"', v_column
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  RETURN jsonb_build_object('column', v_column, 'attnum', v_attr.attnum, 'type', v_attr.type,
    'kind', CASE WHEN v_predicted IS NOT NULL THEN 'classifier' ELSE 'regressor' END,
    'predicted', coalesce(v_predicted, v_number), 'score', CASE WHEN v_predicted IS NOT NULL THEN v_score END);
END
$$;
