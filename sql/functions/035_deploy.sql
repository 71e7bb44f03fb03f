-- Deployments: ml.deploy wires a model to a table, ml.undeploy unwires it; ml._activate
-- (re)builds what a deployment generates; schema changes and dropped tables turn a deployment
-- invalid or dropped without failing the statement that changed the table.

-- The deployment's mapping with the table's current column names: a renamed input or
-- prediction column is followed (plans record attnums), a dropped one is an error that says so.
CREATE OR REPLACE FUNCTION ml._current_mapping(d ml._deployments, OUT inputs jsonb, OUT outputs jsonb)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_renamed boolean := false;
  v_src jsonb;
  v_in jsonb;
  v_out jsonb;
  v_now name;
  v_dropped boolean;
  v_specs jsonb;
BEGIN
  inputs := d.inputs;
  outputs := d.outputs;
  IF d.plan IS NULL OR coalesce((d.plan->>'version')::int, 1) < 2 THEN
    RETURN;
  END IF;

  inputs := '{}';
  FOR v_in IN SELECT i FROM jsonb_array_elements(d.plan->'inputs') i LOOP
    v_specs := '[]';
    FOR v_src IN SELECT s FROM jsonb_array_elements(v_in->'sources') s LOOP
      IF v_src ? 'column' THEN
        SELECT a.attname, a.attisdropped INTO v_now, v_dropped
          FROM pg_attribute a WHERE a.attrelid = d.source AND a.attnum = (v_src->>'attnum')::int2;
        IF v_dropped IS DISTINCT FROM false THEN
          RAISE EXCEPTION 'input column "%" (model input "%") was dropped from %', v_src->>'column', v_in->>'name', ml._relname(d.source)
            USING ERRCODE = 'undefined_column';
        END IF;
        v_renamed := v_renamed OR v_now <> v_src->>'column';
        v_specs := v_specs || to_jsonb(v_now::text);
      ELSE
        v_specs := v_specs || (v_src->'expr');
      END IF;
    END LOOP;
    inputs := inputs || jsonb_build_object(v_in->>'name', v_specs);
  END LOOP;

  outputs := '{}';
  -- A side table's columns are not the source's: its outputs are not followed.
  FOR v_out IN SELECT o FROM jsonb_array_elements(d.plan->'outputs') o WHERE jsonb_typeof(d.plan->'target') IS DISTINCT FROM 'object' LOOP
    SELECT a.attname, a.attisdropped INTO v_now, v_dropped
      FROM pg_attribute a WHERE a.attrelid = d.source AND a.attnum = (v_out->>'attnum')::int2;
    IF v_dropped IS DISTINCT FROM false THEN
      RAISE EXCEPTION 'prediction column "%" (output "%") was dropped from %', v_out->>'column', v_out->>'output', ml._relname(d.source)
        USING ERRCODE = 'undefined_column',
              HINT = 'Deploy again (ml.deploy with the same name) to add it back.';
    END IF;
    v_renamed := v_renamed OR v_now <> v_out->>'column';
    outputs := outputs || jsonb_build_object(v_now::text, coalesce(d.outputs->(v_out->>'column'), to_jsonb(v_out->>'output')));
  END LOOP;

  IF jsonb_typeof(d.plan->'target') = 'object' THEN
    outputs := d.outputs;
  END IF;
  IF NOT v_renamed THEN
    inputs := d.inputs;
    outputs := d.outputs;
  END IF;
END
$$;

-- Turns a deployment that no longer fits its table (or model) invalid: its triggers go, so the
-- application's writes go on unscored; its queued keys stay for when ml.deploy re-activates it.
CREATE OR REPLACE FUNCTION ml._invalidate(p_id int, p_reason text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  d ml._deployments;
BEGIN
  SELECT * INTO STRICT d FROM ml._deployments WHERE id = p_id FOR UPDATE;
  PERFORM ml._drop_triggers(d.name, d.source);
  UPDATE ml._deployments SET status = 'invalid', reason = p_reason WHERE id = p_id;
  -- Out of the publication too: a table whose replica identity went away must not stay published.
  IF ml._captures_wal(d.plan) THEN
    PERFORM ml._sync_publication();
  END IF;
  PERFORM ml._grant_worker(d.source);
  PERFORM ml._grant_worker_target((d.plan->'target'->>'oid')::oid);
  RAISE WARNING 'pgscore: deployment "%" is invalid now: %', d.name, p_reason
    USING HINT = 'Its triggers were removed and its queued rows kept; fix the cause and run ml.deploy again with the same name.';
  PERFORM pg_notify('pgscore_config', d.name);
END
$$;

-- The worker found that no prediction can be written to a deployment's table (it publishes
-- updates without a replica identity, the database is read-only): the deployment turns invalid
-- with the database's reason, which raises the 'invalid' alert. Unlike a schema change, nothing
-- is wrong with what the triggers read: they stay, and the application's rows keep being queued
-- (ml.status counts them pending) for when the cause is fixed and the deployment deployed again.
CREATE OR REPLACE FUNCTION ml._invalidate_unwritable(p_id int, p_reason text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  d ml._deployments;
BEGIN
  SELECT * INTO d FROM ml._deployments WHERE id = p_id AND status = 'active' FOR UPDATE;
  IF NOT FOUND THEN
    RETURN;
  END IF;
  UPDATE ml._deployments SET status = 'invalid', reason = p_reason WHERE id = p_id;
  RAISE WARNING 'pgscore: deployment "%" is invalid now: %', d.name, p_reason
    USING HINT = 'Its rows stay queued, and new ones are queued too; fix the cause and run ml.deploy again with the same name.';
  PERFORM pg_notify('pgscore_config', d.name);
END
$$;

-- The table of a deployment was dropped: its queue and trigger function go with it.
CREATE OR REPLACE FUNCTION ml._mark_dropped(p_id int)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  d ml._deployments;
BEGIN
  SELECT * INTO STRICT d FROM ml._deployments WHERE id = p_id FOR UPDATE;
  EXECUTE format('DROP TABLE IF EXISTS ml.%I', format('_queue_%s', d.id));
  EXECUTE format('DROP FUNCTION IF EXISTS ml.%I()', format('_enqueue_%s', d.id));
  UPDATE ml._deployments SET status = 'dropped', plan = NULL,
         reason = format('table %s was dropped', coalesce(d.source_name, d.source::text))
   WHERE id = p_id;
  PERFORM pg_notify('pgscore_config', d.name);
END
$$;

-- Release e565d96 had ml._activate(int, boolean); a second signature would make calls ambiguous.
DROP FUNCTION IF EXISTS ml._activate(int, boolean);

-- Resolves the mapping against the model's signature and builds what the deployment generates.
-- Idempotent: ml.promote, schema changes and `pgscore migrate` re-run it. p_add_columns: may it
-- add prediction columns (deploy, promote) or must they exist (after a schema change)?
CREATE OR REPLACE FUNCTION ml._activate(p_id int, p_backfill boolean, p_add_columns boolean DEFAULT true)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  d ml._deployments;
  v_version int;
  v_mapping record;
  v_plan jsonb;
  v_out jsonb;
  v_provenance jsonb;
  v_target jsonb;
  v_rel text;
BEGIN
  -- The deployment's tables before its row, as ml._recheck and ml.undeploy take them: an ALTER
  -- TABLE holds its table, and its event trigger then waits for the row (ml.promote, holding
  -- the row and then reading the table's triggers, deadlocked with one: the generated suite).
  SELECT * INTO STRICT d FROM ml._deployments WHERE id = p_id;
  PERFORM ml._lock_tables(ARRAY(SELECT ml._trigger_tables(d.source)
                                UNION SELECT c.oid::regclass FROM pg_class c WHERE c.oid = (d.plan->'target'->>'oid')::oid),
                          'ACCESS SHARE', 'ml.deploy');
  SELECT * INTO STRICT d FROM ml._deployments WHERE id = p_id FOR UPDATE;
  v_rel := ml._relname(d.source);
  IF v_rel IS NULL THEN
    PERFORM ml._mark_dropped(p_id);
    RETURN;
  END IF;
  -- The columns this adds are pgscore's own change: the event trigger must not re-plan the
  -- deployment in the middle of it (rolled back with the transaction if this fails).
  PERFORM set_config('pgscore.activating', 'on', true);
  v_version := ml._resolve_version(d.model, d.version, d.alias);
  SELECT * INTO v_mapping FROM ml._current_mapping(d);
  v_plan := ml._plan(d.source, format('%s@%s', d.model, v_version), ml._signature(d.model, v_version), v_mapping.inputs, v_mapping.outputs);

  IF d.options ? 'target' THEN
    -- Predictions go to a side table: the source gets no columns; output attnums are the target's.
    v_target := ml._plan_target(d, v_plan, p_add_columns);
    v_plan := jsonb_set(v_plan, '{outputs}', (
      SELECT jsonb_agg((o - 'exists') || jsonb_build_object('attnum', (v_target->'attnums'->>(o->>'column'))::int) ORDER BY n)
        FROM jsonb_array_elements(v_plan->'outputs') WITH ORDINALITY x(o, n)));
    v_plan := v_plan || jsonb_build_object('provenance', NULL, 'target', v_target - 'attnums');
  ELSE
    FOR v_out IN SELECT o FROM jsonb_array_elements(v_plan->'outputs') o WHERE NOT (o->>'exists')::boolean LOOP
      IF NOT p_add_columns THEN
        RAISE EXCEPTION 'prediction column "%" of % does not exist', v_out->>'column', v_rel
          USING ERRCODE = 'undefined_column', HINT = 'Deploy again (ml.deploy with the same name) to add it back.';
      END IF;
      PERFORM ml._lock_tables(ARRAY(SELECT ml._trigger_tables(d.source)), 'ACCESS EXCLUSIVE', 'ml.deploy');
      EXECUTE format('ALTER TABLE %s ADD COLUMN %I %s', v_rel, v_out->>'column', v_out->>'sql_type');
    END LOOP;
    -- Whether a column existed before matters only here; its attnum lets renames be followed.
    v_plan := jsonb_set(v_plan, '{outputs}', (
      SELECT jsonb_agg((o - 'exists') || jsonb_build_object('attnum', a.attnum) ORDER BY n)
        FROM jsonb_array_elements(v_plan->'outputs') WITH ORDINALITY x(o, n)
        JOIN pg_attribute a ON a.attrelid = d.source AND a.attname = o->>'column' AND NOT a.attisdropped));

    -- Provenance columns belong to pgscore: added at deploy, and by `pgscore migrate` for
    -- deployments from before provenance; one dropped later turns the deployment invalid.
    v_provenance := ml._plan_provenance(d.source, d.name, d.options, v_plan);
    FOR v_out IN SELECT p FROM jsonb_each(coalesce(v_provenance, '{}')) e(k, p) WHERE NOT (p->>'exists')::boolean LOOP
      IF NOT p_add_columns AND d.plan ? 'provenance' THEN
        RAISE EXCEPTION 'provenance column "%" of % does not exist', v_out->>'column', v_rel
          USING ERRCODE = 'undefined_column', HINT = 'Deploy again (ml.deploy with the same name) to add it back.';
      END IF;
      PERFORM ml._lock_tables(ARRAY(SELECT ml._trigger_tables(d.source)), 'ACCESS EXCLUSIVE', 'ml.deploy');
      EXECUTE format('ALTER TABLE %s ADD COLUMN %I %s', v_rel, v_out->>'column', v_out->>'sql_type');
    END LOOP;
    v_plan := v_plan || jsonb_build_object('provenance', (
      SELECT jsonb_object_agg(e.k, (e.p - 'exists') || jsonb_build_object('attnum', a.attnum))
        FROM jsonb_each(v_provenance) e(k, p)
        JOIN pg_attribute a ON a.attrelid = d.source AND a.attname = e.p->>'column' AND NOT a.attisdropped));
    v_plan := v_plan || jsonb_build_object('target', NULL);
  END IF;
  v_plan := v_plan || ml._plan_lifecycle(d, v_plan, v_mapping.inputs, v_mapping.outputs)
                   || jsonb_build_object('capture', coalesce(d.options->>'capture', 'trigger'));
  -- Tables pgscore cannot serve (temporary, inherited, hidden by RLS, with owner code that would
  -- run as the worker) are refused here: at deploy, and on every re-check after a change.
  PERFORM ml._check_servable(d.source, (v_plan->'target'->>'oid')::oid, ml._written_columns(v_plan), d.options);

  UPDATE ml._deployments SET inputs = v_mapping.inputs, outputs = v_mapping.outputs, source_name = v_rel WHERE id = p_id;
  -- A promotion to a version that maps the same way, new weights or a new shadow change nothing
  -- on the table.
  IF NOT (d.status = 'active' AND ml._installed_part(d.plan) = ml._installed_part(v_plan)) THEN
    PERFORM ml._install(d.id, d.name, d.source, v_plan);
    UPDATE ml._deployments SET plan = v_plan, status = 'active', reason = NULL WHERE id = p_id;
  ELSE
    IF d.plan <> v_plan THEN
      UPDATE ml._deployments SET plan = v_plan WHERE id = p_id;
    END IF;
    IF NOT ml._triggers_complete(d.name, d.source) THEN
      -- A partition was created or attached since.
      PERFORM ml._install_triggers(d.id, d.name, d.source, v_plan);
    END IF;
  END IF;
  IF ml._captures_wal(v_plan) OR ml._captures_wal(d.plan) THEN
    PERFORM ml._sync_publication();
  END IF;
  PERFORM ml._grant_worker(d.source);
  PERFORM ml._grant_worker_target((v_plan->'target'->>'oid')::oid);
  IF (d.plan->'target'->>'oid')::oid IS DISTINCT FROM (v_plan->'target'->>'oid')::oid THEN
    PERFORM ml._grant_worker_target((d.plan->'target'->>'oid')::oid);
  END IF;
  PERFORM set_config('pgscore.activating', '', true);
  -- A live deployment scores the rows already there at once; a batch one waits for its runs.
  IF p_backfill AND coalesce((d.options->>'backfill')::boolean, v_plan->>'mode' <> 'batch') THEN
    PERFORM ml._start_run(d.id, 'backfill');
  END IF;
  PERFORM pg_notify('pgscore_config', d.name);
END
$$;

-- ml._recheck had two arguments until 2026-12-07: a second signature would make calls ambiguous.
DROP FUNCTION IF EXISTS ml._recheck(int, text);

-- Locks a deployment's tables (ACCESS SHARE) and then its row: the order in which DROP TABLE
-- and ALTER TABLE take them (their event triggers lock the row). p_wait_ms NULL waits as long as
-- it takes: the event triggers run inside the application's own statement, which holds the
-- table already. The worker gives way instead (a DBA call holds the row, then takes the table:
-- a worker holding the table while it waited for the row made ml.deploy fail): each try waits
-- for nothing, a failed try gives back what it took, and after p_wait_ms it returns false.
CREATE OR REPLACE FUNCTION ml._lock_deployment(p_id int, p_wait_ms int)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_table text;
  v_nowait text := CASE WHEN p_wait_ms IS NULL THEN '' ELSE ' NOWAIT' END;
  v_until timestamptz := clock_timestamp() + coalesce(p_wait_ms, 0) * interval '1 millisecond';
  v_sleep float8 := 0.01;
BEGIN
  LOOP
    BEGIN
      FOR v_table IN
        SELECT format('%I.%I', n.nspname, c.relname) FROM ml._deployments d
          JOIN pg_class c ON c.oid IN (d.source, (d.plan->'target'->>'oid')::oid)
          JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE d.id = p_id ORDER BY c.oid
      LOOP
        BEGIN
          EXECUTE format('LOCK TABLE %s IN ACCESS SHARE MODE%s', v_table, v_nowait);
        EXCEPTION WHEN undefined_table THEN
          NULL;  -- dropped meanwhile: the caller finds out
        END;
      END LOOP;
      IF p_wait_ms IS NULL THEN
        PERFORM 1 FROM ml._deployments WHERE id = p_id FOR UPDATE;
      ELSE
        PERFORM 1 FROM ml._deployments WHERE id = p_id FOR UPDATE NOWAIT;
      END IF;
      RETURN true;
    EXCEPTION WHEN lock_not_available THEN
      IF clock_timestamp() >= v_until THEN
        RETURN false;
      END IF;
    END;
    PERFORM pg_sleep(least(v_sleep * (0.5 + random()), extract(epoch FROM v_until - clock_timestamp())::float8));
    v_sleep := least(v_sleep * 2, 0.5);
  END LOOP;
END
$$;

-- Re-plans one deployment against its table and model as they are now: it stays (or becomes)
-- active when the mapping still fits, turns invalid with the reason when it does not, and is
-- marked dropped when its table is gone. Returns the status. Called after schema changes by the
-- event triggers (p_wait_ms NULL), and by the worker where event triggers could not be
-- installed and after a failed batch: it returns 'busy' when a DBA call or an application's
-- DDL held the deployment or its tables for p_wait_ms.
CREATE OR REPLACE FUNCTION ml._recheck(p_id int, p_context text DEFAULT NULL, p_wait_ms int DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_status text;
BEGIN
  IF NOT ml._lock_deployment(p_id, p_wait_ms) THEN
    RETURN 'busy';
  END IF;
  -- Only an active deployment is re-planned: one already invalid or dropped keeps its reason
  -- (a worker that has not reloaded yet may still ask about it).
  SELECT status INTO v_status FROM ml._deployments WHERE id = p_id;
  IF v_status IS DISTINCT FROM 'active' THEN
    RETURN coalesce(v_status, 'undeployed');
  END IF;
  BEGIN
    PERFORM ml._activate(p_id, false, false);
  EXCEPTION
    -- pgscore gave way to a session that waits for this one: nothing is wrong with the
    -- deployment. The event trigger warns, and the worker checks it again.
    WHEN lock_not_available THEN
      IF p_wait_ms IS NULL THEN
        RAISE;
      END IF;
      RETURN 'busy';
    WHEN OTHERS THEN
      PERFORM ml._invalidate(p_id, CASE WHEN p_context IS NULL THEN SQLERRM ELSE format('%s: %s', p_context, SQLERRM) END);
  END;
  SELECT status INTO v_status FROM ml._deployments WHERE id = p_id;
  RETURN v_status;
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
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
  v_model text;
  v_version int;
  v_alias text;
  v_resolved int;
  v_id int;
  v_kind "char";
  v_old ml._deployments;
  v_signed boolean;
  v_target regclass;
BEGIN
  IF deployment IS NULL OR deployment !~ '^[A-Za-z0-9_][A-Za-z0-9_.-]{0,39}$' THEN
    RAISE EXCEPTION 'deployment name % is not valid', coalesce(quote_literal(deployment), 'NULL')
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Use letters, digits, "_", "." and "-" (at most 40 characters).';
  END IF;
  SELECT * INTO v_old FROM ml._deployments d WHERE d.name = deployment FOR UPDATE;
  IF FOUND AND v_old.status IN ('active', 'pending') THEN
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
  IF source::oid IN (SELECT c.oid FROM pg_class c WHERE c.relnamespace = 'ml'::regnamespace) THEN
    RAISE EXCEPTION '% belongs to pgscore', source USING ERRCODE = 'wrong_object_type';
  END IF;
  -- This function runs as the schema owner: the caller must be able to act as the table's owner
  -- (it adds columns and triggers to it), not merely be an admin; and, to take over the name of
  -- an invalid deployment, as the owner of that one's table too.
  PERFORM ml._require_owner(source);
  IF v_old.id IS NOT NULL AND v_old.source <> source THEN
    PERFORM ml._require_owner(v_old.source, format('deploy again "%s"', deployment));
  END IF;

  PERFORM ml._check_options(options);
  IF options ? 'target' THEN
    -- pgscore appends to an existing side table and grants the worker INSERT on it.
    SELECT to_regclass(format('%I.%I', t.schema, t.name)) INTO v_target FROM ml._target_name(source, options->>'target') t;
    IF v_target IS NOT NULL THEN
      PERFORM ml._require_owner(v_target);
    END IF;
  END IF;
  SELECT r.model, r.version, r.alias INTO v_model, v_version, v_alias FROM ml._parse_ref(model, '') r;

  IF v_old.id IS NULL THEN
    INSERT INTO ml._deployments (name, source, model, version, alias, inputs, outputs, options, source_name)
    VALUES (deployment, source, v_model, v_version, v_alias, inputs, outputs, options, ml._relname(source))
    RETURNING id INTO v_id;
  ELSE
    -- Re-activating an invalid (or dropped) deployment keeps its queued keys, unless it moves
    -- to another table, whose keys they are not.
    v_id := v_old.id;
    IF v_old.source <> source THEN
      EXECUTE format('DROP TABLE IF EXISTS ml.%I', format('_queue_%s', v_id));
    END IF;
    UPDATE ml._deployments d
       SET source = source, model = v_model, version = v_version, alias = v_alias, inputs = inputs, outputs = outputs,
           options = options, plan = NULL, status = 'pending', reason = NULL, source_name = ml._relname(source)
     WHERE d.id = v_id;
  END IF;

  -- The signature check and the worker's ml._record_signature take the model row in turn: either
  -- this sees the signature, or the worker sees this pending deployment once it commits.
  v_resolved := ml._resolve_version(v_model, v_version, v_alias);
  SELECT m.signature IS NOT NULL OR m.load_error IS NOT NULL INTO v_signed
    FROM ml._models m WHERE m.name = v_model AND m.version = v_resolved FOR SHARE;
  IF NOT v_signed THEN
    RAISE NOTICE 'deployment "%" is pending: no worker has read the signature of %@% yet', deployment, v_model, v_resolved
      USING HINT = 'It activates (or turns invalid, with the reason) once `pgscore worker` has loaded the model; see ml.deployments.';
    RETURN 'pending';
  END IF;
  PERFORM ml._activate(v_id, true);
  RETURN 'active';
END
$$;

-- An unreleased first form of the lock helper; ml._lock_tables(regclass[], text, text) (034_refusals.sql) replaces it.
DROP FUNCTION IF EXISTS ml._lock_tables(text[]);

-- Only the table's owner may remove a deployment. Its tables are locked first (queue, table and
-- partitions, side table), then its row: an in-flight batch holds the queue and then references
-- the row (its statistics' foreign key), so the row locked first deadlocked with it.
CREATE OR REPLACE FUNCTION ml.undeploy(deployment text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
  d ml._deployments;
BEGIN
  SELECT * INTO d FROM ml._deployments x WHERE x.name = deployment;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'deployment "%" does not exist', deployment USING ERRCODE = 'no_data_found';
  END IF;
  PERFORM ml._require_owner(d.source, format('undeploy "%s"', d.name));
  -- Every lock the drops below need (DROP TRIGGER takes ACCESS EXCLUSIVE), taken at once in short
  -- tries so that writers never queue behind it, and before the deployment row: an in-flight
  -- batch holds the queue and then references the row (its statistics' foreign key).
  PERFORM ml._lock_tables(ARRAY(SELECT ml._trigger_tables(d.source) UNION
                                SELECT t.tgrelid::regclass FROM pg_trigger t WHERE t.tgfoid = ml._enqueue_function(d.name)
                                UNION SELECT c.oid::regclass FROM pg_class c WHERE c.oid = (d.plan->'target'->>'oid')::oid)
                          || to_regclass(format('ml.%I', format('_queue_%s', d.id))),
                          'ACCESS EXCLUSIVE', 'ml.undeploy');
  SELECT * INTO d FROM ml._deployments x WHERE x.id = d.id FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'deployment "%" does not exist', deployment USING ERRCODE = 'no_data_found';
  END IF;
  PERFORM ml._drop_triggers(d.name, d.source);
  EXECUTE format('DROP FUNCTION IF EXISTS ml.%I()', format('_enqueue_%s', d.id));
  EXECUTE format('DROP FUNCTION IF EXISTS ml.%I(jsonb)', format('_capture_%s', d.id));
  EXECUTE format('DROP TABLE IF EXISTS ml.%I', format('_queue_%s', d.id));
  DELETE FROM ml._deployments WHERE id = d.id;
  IF ml._captures_wal(d.plan) THEN
    PERFORM ml._sync_publication();
  END IF;
  PERFORM ml._grant_worker(d.source);
  -- A side table keeps its predictions; only the worker's right to append goes.
  PERFORM ml._grant_worker_target((d.plan->'target'->>'oid')::oid);
  PERFORM pg_notify('pgscore_config', d.name);
END
$$;

-- The columns of ml.deployments change between versions: drop and create instead of replacing.
DROP VIEW IF EXISTS ml.deployments;
CREATE VIEW ml.deployments AS
SELECT d.name AS deployment,
       coalesce(ml._relname(d.source), d.source_name) AS source,
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
