-- Deployments: ml.deploy wires a model to a table, ml.undeploy unwires it.
--
-- Each active deployment owns
--   ml._queue_<id>        primary keys waiting to be scored, in chunks (see ml._enqueue_sql)
--   ml._enqueue_<id>()    the statement-level trigger function that fills it
--   two triggers on the source table, "pgscore_<deployment>_insert" and "..._update".
-- The triggers are statement-level with transition tables: one queue INSERT per statement,
-- and at most one NOTIFY, sent only when a worker is idle (see the advisory lock below).

-- Advisory lock (1885827939 = 'pgsc', 1) is held by a worker while it idles, waiting for work.
-- A writer that cannot take it shared knows a worker is asleep and wakes it with NOTIFY; a writer
-- that can take it knows every worker is busy and will find the rows on its next claim, so it
-- skips the NOTIFY (whose commit-time lock would serialise concurrent writers). The shared lock
-- is held until the writer commits, so a worker can only go to sleep once every writer that saw
-- it busy has committed, and it looks at the queues once more after that.

-- Queue rows hold primary keys in chunks: one row per statement for single-row writes, one per
-- 100 rows for bulk statements (so a million-row INSERT adds 10,000 queue rows, not a million).
-- Each key column of the table is an array column of the same name; pgscore_n counts the keys.
-- This builds the INSERT that queues the keys selected by p_from (a query whose columns are
-- named like the key columns).
CREATE OR REPLACE FUNCTION ml._enqueue_sql(p_id int, p_plan jsonb, p_from text, p_priority int)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT format(
    'INSERT INTO ml.%1$I (pgscore_priority, pgscore_n, %2$s)
     SELECT %3$s, count(*), %4$s
       FROM (SELECT %2$s, (row_number() OVER () - 1) / 100 AS pgscore_chunk FROM (%5$s) f) c
      GROUP BY pgscore_chunk',
    format('_queue_%s', p_id),
    string_agg(format('%I', k->>'column'), ', '),
    p_priority,
    string_agg(format('array_agg(%I)', k->>'column'), ', '),
    p_from)
  FROM jsonb_array_elements(p_plan->'keys') k
$$;

CREATE OR REPLACE FUNCTION ml._install_queue(p_id int, p_name text, p_source oid, p_plan jsonb)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_rel text := ml._relname(p_source);
  v_queue text := format('_queue_%s', p_id);
  v_function text := format('_enqueue_%s', p_id);
  v_key_defs text;
  v_keys text;
  v_n_keys text;
  v_join text;
  v_first_key text;
  v_features text;
BEGIN
  -- Writers lock the table, then its queue (in the trigger). Take them in the same order, or a
  -- re-install (ml.promote) and an INSERT can deadlock.
  EXECUTE format('LOCK TABLE %s IN SHARE ROW EXCLUSIVE MODE', v_rel);
  SELECT string_agg(format('%I %s[] NOT NULL', k->>'column', k->>'type'), ', '),
         string_agg(format('%I', k->>'column'), ', '),
         string_agg(format('n.%I', k->>'column'), ', '),
         string_agg(format('o.%1$I = n.%1$I', k->>'column'), ' AND '),
         format('%I', (array_agg(k->>'column'))[1])
    INTO v_key_defs, v_keys, v_n_keys, v_join, v_first_key
    FROM jsonb_array_elements(p_plan->'keys') k;

  SELECT 'ROW(' || string_agg(CASE WHEN s ? 'column' THEN format('%I', s->>'column') ELSE format('(%s)', s->>'expr') END, ', ') || ')'
    INTO v_features
    FROM jsonb_array_elements(p_plan->'inputs') i, jsonb_array_elements(i->'sources') s;

  EXECUTE format(
    'CREATE TABLE IF NOT EXISTS ml.%I (
       pgscore_seq       bigint GENERATED ALWAYS AS IDENTITY,
       pgscore_priority  smallint NOT NULL DEFAULT 0,
       pgscore_queued_at timestamptz NOT NULL DEFAULT statement_timestamp(),
       pgscore_n         int NOT NULL,
       %s)', v_queue, v_key_defs);
  EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON ml.%I (pgscore_priority, pgscore_seq)', v_queue || '_claim', v_queue);

  EXECUTE format($f$
    CREATE OR REPLACE FUNCTION ml.%1$I() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $body$
    DECLARE
      n bigint;
    BEGIN
      IF TG_OP = 'INSERT' THEN
        SELECT count(*) INTO n FROM pgscore_new;
        IF n <= 100 THEN
          -- The common case (single-row writes): one queue row, without chunking machinery.
          INSERT INTO ml.%4$I (pgscore_n, %5$s) SELECT n, %6$s FROM pgscore_new HAVING count(*) > 0;
        ELSE
          %2$s;
        END IF;
      ELSE
        -- Only rows whose model inputs changed (or whose key changed) are scored again.
        %3$s;
      END IF;
      IF FOUND AND NOT pg_try_advisory_xact_lock_shared(1885827939, 1) THEN
        PERFORM pg_notify('pgscore_wake', '');
      END IF;
      RETURN NULL;
    END
    $body$ $f$,
    v_function,
    ml._enqueue_sql(p_id, p_plan, format('SELECT %s FROM pgscore_new', v_keys), 0),
    ml._enqueue_sql(p_id, p_plan, format(
      'SELECT %1$s FROM (SELECT %2$s, %3$s AS features FROM pgscore_new) n
         LEFT JOIN (SELECT %2$s, %3$s AS features FROM pgscore_old) o ON %4$s
        WHERE o.%5$s IS NULL OR o.features IS DISTINCT FROM n.features',
      v_n_keys, v_keys, v_features, v_join, v_first_key), 0),
    v_queue,
    v_keys,
    (SELECT string_agg(format('array_agg(%I)', k->>'column'), ', ') FROM jsonb_array_elements(p_plan->'keys') k));

  -- The worker sets pgscore.writeback in its write-back transaction: its writes never re-queue.
  EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', format('pgscore_%s_insert', p_name), v_rel);
  EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', format('pgscore_%s_update', p_name), v_rel);
  EXECUTE format(
    'CREATE TRIGGER %I AFTER INSERT ON %s REFERENCING NEW TABLE AS pgscore_new
     FOR EACH STATEMENT WHEN (pg_catalog.current_setting(''pgscore.writeback'', true) IS DISTINCT FROM ''on'')
     EXECUTE FUNCTION ml.%I()', format('pgscore_%s_insert', p_name), v_rel, v_function);
  EXECUTE format(
    'CREATE TRIGGER %I AFTER UPDATE ON %s REFERENCING OLD TABLE AS pgscore_old NEW TABLE AS pgscore_new
     FOR EACH STATEMENT WHEN (pg_catalog.current_setting(''pgscore.writeback'', true) IS DISTINCT FROM ''on'')
     EXECUTE FUNCTION ml.%I()', format('pgscore_%s_update', p_name), v_rel, v_function);
END
$$;

-- Resolves the mapping against the model's signature, adds prediction columns, installs the
-- queue and triggers, and marks the deployment active. Idempotent: ml.promote re-runs it.
CREATE OR REPLACE FUNCTION ml._activate(p_id int, p_backfill boolean)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  d ml._deployments;
  v_version int;
  v_plan jsonb;
  v_out jsonb;
BEGIN
  SELECT * INTO STRICT d FROM ml._deployments WHERE id = p_id FOR UPDATE;
  v_version := ml._resolve_version(d.model, d.version, d.alias);
  v_plan := ml._plan(d.source, format('%s@%s', d.model, v_version), ml._signature(d.model, v_version), d.inputs, d.outputs);

  FOR v_out IN SELECT o FROM jsonb_array_elements(v_plan->'outputs') o WHERE NOT (o->>'exists')::boolean LOOP
    EXECUTE format('ALTER TABLE %s ADD COLUMN %I %s', ml._relname(d.source), v_out->>'column', v_out->>'sql_type');
  END LOOP;
  -- Whether a column existed before matters only here.
  v_plan := jsonb_set(v_plan, '{outputs}', (SELECT jsonb_agg(o - 'exists') FROM jsonb_array_elements(v_plan->'outputs') o));

  -- A promotion to a version that maps the same way changes nothing on the table.
  IF d.status = 'active' AND d.plan = v_plan THEN
    PERFORM pg_notify('pgscore_config', d.name);
    RETURN;
  END IF;
  PERFORM ml._install_queue(d.id, d.name, d.source, v_plan);
  UPDATE ml._deployments SET plan = v_plan, status = 'active', reason = NULL WHERE id = p_id;
  IF p_backfill AND coalesce((d.options->>'backfill')::boolean, true) THEN
    PERFORM ml.backfill(d.name);
  END IF;
  PERFORM pg_notify('pgscore_config', d.name);
END
$$;

CREATE OR REPLACE FUNCTION ml.deploy(
  deployment text,
  source regclass,
  model text,
  inputs jsonb DEFAULT NULL,
  outputs jsonb DEFAULT NULL,
  options jsonb DEFAULT '{}')
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
  v_ref text[];
  v_model text;
  v_version int;
  v_alias text;
  v_resolved int;
  v_id int;
  v_key text;
  v_kind "char";
BEGIN
  IF deployment IS NULL OR deployment !~ '^[A-Za-z0-9_][A-Za-z0-9_.-]{0,39}$' THEN
    RAISE EXCEPTION 'deployment name % is not valid', coalesce(quote_literal(deployment), 'NULL')
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Use letters, digits, "_", "." and "-" (at most 40 characters).';
  END IF;
  IF EXISTS (SELECT 1 FROM ml._deployments d WHERE d.name = deployment) THEN
    RAISE EXCEPTION 'deployment "%" already exists', deployment
      USING ERRCODE = 'duplicate_object', HINT = 'Run ml.undeploy first to change it, or pick another name.';
  END IF;
  IF source IS NULL THEN
    RAISE EXCEPTION 'source table is NULL' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  SELECT c.relkind INTO v_kind FROM pg_class c WHERE c.oid = source;
  IF v_kind NOT IN ('r', 'p') THEN
    RAISE EXCEPTION '% is not a table', source USING ERRCODE = 'wrong_object_type';
  END IF;

  IF options IS NULL OR jsonb_typeof(options) <> 'object' THEN
    RAISE EXCEPTION 'options must be a JSON object' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  FOR v_key IN SELECT jsonb_object_keys(options) LOOP
    IF v_key <> 'backfill' THEN
      RAISE EXCEPTION 'option "%" is not supported by this version of pgscore', v_key
        USING ERRCODE = 'feature_not_supported', HINT = 'Supported options: backfill (true or false).';
    END IF;
  END LOOP;
  IF options ? 'backfill' AND jsonb_typeof(options->'backfill') <> 'boolean' THEN
    RAISE EXCEPTION 'option "backfill" must be true or false' USING ERRCODE = 'invalid_parameter_value';
  END IF;

  -- 'churn' follows production, 'churn@3' pins version 3, 'churn@staging' follows an alias.
  v_ref := regexp_match(coalesce(model, ''), '^([^@]+)(?:@(.+))?$');
  IF v_ref IS NULL THEN
    RAISE EXCEPTION 'model reference % is not valid', coalesce(quote_literal(model), 'NULL')
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Use ''name'', ''name@3'' or ''name@staging''.';
  END IF;
  v_model := v_ref[1];
  IF NOT EXISTS (SELECT 1 FROM ml._models m WHERE m.name = v_model) THEN
    RAISE EXCEPTION 'model "%" is not registered', v_model
      USING ERRCODE = 'no_data_found', HINT = 'Register it with ml.register_model or `pgscore model push`.';
  END IF;
  IF v_ref[2] ~ '^\d+$' THEN
    v_version := v_ref[2]::int;
    IF NOT EXISTS (SELECT 1 FROM ml._models m WHERE m.name = v_model AND m.version = v_version) THEN
      RAISE EXCEPTION 'model %@% does not exist (versions: %)', v_model, v_version,
        (SELECT string_agg(m.version::text, ', ' ORDER BY m.version) FROM ml._models m WHERE m.name = v_model)
        USING ERRCODE = 'no_data_found';
    END IF;
  ELSE
    v_alias := coalesce(v_ref[2], 'production');
    IF NOT EXISTS (SELECT 1 FROM ml._aliases a WHERE a.model = v_model AND a.alias = v_alias) THEN
      RAISE EXCEPTION 'model % has no alias "%"', v_model, v_alias
        USING ERRCODE = 'no_data_found', HINT = 'Point it at a version with ml.promote.';
    END IF;
  END IF;

  INSERT INTO ml._deployments (name, source, model, version, alias, inputs, outputs, options)
  VALUES (deployment, source, v_model, v_version, v_alias, inputs, outputs, options)
  RETURNING id INTO v_id;

  v_resolved := ml._resolve_version(v_model, v_version, v_alias);
  IF EXISTS (SELECT 1 FROM ml._models m WHERE m.name = v_model AND m.version = v_resolved AND m.signature IS NULL AND m.load_error IS NULL) THEN
    RAISE NOTICE 'deployment "%" is pending: no worker has read the signature of %@% yet', deployment, v_model, v_resolved
      USING HINT = 'It activates (or turns invalid, with the reason) once `pgscore worker` has loaded the model; see ml.deployments.';
    RETURN 'pending';
  END IF;
  PERFORM ml._activate(v_id, true);
  RETURN 'active';
END
$$;

CREATE OR REPLACE FUNCTION ml.undeploy(deployment text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
  d ml._deployments;
  v_rel text;
BEGIN
  SELECT * INTO d FROM ml._deployments x WHERE x.name = deployment FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'deployment "%" does not exist', deployment USING ERRCODE = 'no_data_found';
  END IF;
  v_rel := ml._relname(d.source);
  IF v_rel IS NOT NULL THEN
    EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', format('pgscore_%s_insert', d.name), v_rel);
    EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', format('pgscore_%s_update', d.name), v_rel);
  END IF;
  EXECUTE format('DROP FUNCTION IF EXISTS ml.%I()', format('_enqueue_%s', d.id));
  EXECUTE format('DROP TABLE IF EXISTS ml.%I', format('_queue_%s', d.id));
  DELETE FROM ml._deployments WHERE id = d.id;
  PERFORM pg_notify('pgscore_config', d.name);
END
$$;

CREATE OR REPLACE VIEW ml.deployments AS
SELECT d.name AS deployment,
       d.source::regclass AS source,
       d.model || coalesce('@' || d.version, CASE WHEN d.alias <> 'production' THEN '@' || d.alias ELSE '' END) AS model,
       ml._resolve_version(d.model, d.version, d.alias) AS model_version,
       d.status,
       d.reason,
       d.inputs,
       d.outputs,
       d.options,
       d.plan,
       d.created_at
  FROM ml._deployments d;
