-- Model registry: register, record signature, aliases (promote / rollback), ml.models.
-- Re-applied on every migrate: everything here is CREATE OR REPLACE.

CREATE OR REPLACE FUNCTION ml.register_model(name text, onnx bytea, metadata jsonb DEFAULT '{}')
RETURNS int
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
  v_version int;
BEGIN
  IF name IS NULL OR name !~ '^[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}$' THEN
    RAISE EXCEPTION 'model name % is not valid', coalesce(quote_literal(name), 'NULL')
      USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Use letters, digits, "_", "." and "-" (at most 63 characters); "@" separates the version in references like churn@3.';
  END IF;
  IF onnx IS NULL OR length(onnx) = 0 THEN
    RAISE EXCEPTION 'model % has no ONNX bytes', name USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF metadata IS NULL OR jsonb_typeof(metadata) <> 'object' THEN
    RAISE EXCEPTION 'metadata of model % must be a JSON object', name USING ERRCODE = 'invalid_parameter_value';
  END IF;

  -- Serialise version numbering per model name.
  PERFORM ml._lock_task('model:' || name);
  -- A removed version's number is never given again: logs and drift counts name versions.
  SELECT greatest((SELECT max(m.version) FROM ml._models m WHERE m.name = name),
                  (SELECT max(r.version) FROM ml._removed_models r WHERE r.name = name), 0) + 1
    INTO v_version;

  INSERT INTO ml._models (name, version, onnx, sha256, metadata)
  VALUES (name, v_version, onnx, encode(sha256(onnx), 'hex'), metadata);

  IF v_version = 1 THEN
    INSERT INTO ml._aliases (model, alias, version) VALUES (name, 'production', 1);
  END IF;

  -- Workers read the signature of models registered with plain SQL.
  PERFORM pg_notify('pgscore_config', 'model');
  RETURN v_version;
END
$$;

-- `pgscore model push` of a model above what one value holds: appends the next part of a version
-- registered in this same transaction (so that no worker sees a model with parts missing), and
-- records the whole file's sha256, which the worker checks.
CREATE OR REPLACE FUNCTION ml._append_model_part(p_name text, p_version int, p_bytes bytea, p_sha256 text)
RETURNS int
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_part int;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM ml._models m WHERE m.name = p_name AND m.version = p_version
                    AND m.xmin::text = (pg_current_xact_id()::text::bigint % 4294967296)::text) THEN
    RAISE EXCEPTION 'model %@% was not registered in this transaction', p_name, p_version
      USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = 'Parts are appended in the transaction that registers the model (`pgscore model push` does so).';
  END IF;
  IF p_bytes IS NULL OR length(p_bytes) = 0 OR p_sha256 !~ '^[0-9a-f]{64}$' THEN
    RAISE EXCEPTION 'a model part needs bytes and the hex sha256 of the whole file' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  SELECT coalesce(max(p.part), 0) + 1 INTO v_part FROM ml._model_parts p WHERE p.name = p_name AND p.version = p_version;
  INSERT INTO ml._model_parts (name, version, part, bytes) VALUES (p_name, p_version, v_part, p_bytes);
  UPDATE ml._models SET sha256 = p_sha256 WHERE name = p_name AND version = p_version;
  RETURN v_part;
END
$$;

-- Called by `pgscore model push` and by workers once they have loaded (or failed to load) a model.
-- Activates deployments that were waiting for this signature.
CREATE OR REPLACE FUNCTION ml._record_signature(p_name text, p_version int, p_signature jsonb, p_load_error text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_id int;
BEGIN
  UPDATE ml._models SET signature = p_signature, load_error = p_load_error
   WHERE name = p_name AND version = p_version;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'model %@% does not exist', p_name, p_version USING ERRCODE = 'no_data_found';
  END IF;

  FOR v_id IN
    SELECT d.id FROM ml._deployments d
     WHERE d.status = 'pending' AND d.model = p_name
       AND ml._resolve_version(d.model, d.version, d.alias) = p_version
  LOOP
    IF p_signature IS NULL THEN
      UPDATE ml._deployments
         SET status = 'invalid', reason = format('model %s@%s cannot be loaded: %s', p_name, p_version, p_load_error)
       WHERE id = v_id;
      CONTINUE;
    END IF;
    BEGIN
      PERFORM ml._activate(v_id, true);
    EXCEPTION WHEN OTHERS THEN
      UPDATE ml._deployments SET status = 'invalid', reason = SQLERRM WHERE id = v_id;
    END;
  END LOOP;
END
$$;

-- The version a deployment scores with right now: its pinned version, or where its alias points.
CREATE OR REPLACE FUNCTION ml._resolve_version(p_model text, p_version int, p_alias text)
RETURNS int
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT coalesce(p_version, (SELECT a.version FROM ml._aliases a WHERE a.model = p_model AND a.alias = p_alias))
$$;

-- The signature of a model version, or an error a person can act on when there is none yet.
CREATE OR REPLACE FUNCTION ml._signature(p_model text, p_version int)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_sig jsonb;
  v_err text;
BEGIN
  SELECT m.signature, m.load_error INTO v_sig, v_err FROM ml._models m WHERE m.name = p_model AND m.version = p_version;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'model %@% does not exist', p_model, p_version USING ERRCODE = 'no_data_found';
  ELSIF v_err IS NOT NULL THEN
    RAISE EXCEPTION 'model %@% cannot be loaded: %', p_model, p_version, v_err USING ERRCODE = 'invalid_parameter_value';
  ELSIF v_sig IS NULL THEN
    RAISE EXCEPTION 'model %@% has no recorded signature yet', p_model, p_version
      USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = 'Start `pgscore worker` (it reads signatures of models registered with SQL) or register with `pgscore model push`.';
  END IF;
  RETURN v_sig;
END
$$;

-- Points an alias at a version after checking that every deployment following the alias fits it.
CREATE OR REPLACE FUNCTION ml._point_alias(p_model text, p_alias text, p_version int, p_history int[])
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_sig jsonb := ml._signature(p_model, p_version);
  d ml._deployments;
BEGIN
  FOR d IN SELECT * FROM ml._deployments WHERE model = p_model AND alias = p_alias AND status = 'active' LOOP
    BEGIN
      PERFORM ml._plan(d.source, format('%s@%s', p_model, p_version), v_sig, d.inputs, d.outputs);
    EXCEPTION WHEN OTHERS THEN
      RAISE EXCEPTION 'deployment "%" follows %@% and does not fit version %: %', d.name, p_model, p_alias, p_version, SQLERRM
        USING ERRCODE = 'invalid_parameter_value';
    END;
  END LOOP;

  INSERT INTO ml._aliases AS a (model, alias, version, history)
  VALUES (p_model, p_alias, p_version, p_history)
  ON CONFLICT (model, alias) DO UPDATE SET version = excluded.version, history = excluded.history, updated_at = now();

  -- Re-plan the followers (with their model, a variant or their shadow): new output columns, a
  -- new input mapping for the trigger. Queued rows stay. A promotion ends the split of a
  -- deployment that follows the alias: it serves the promoted version alone.
  FOR d IN SELECT * FROM ml._deployments x WHERE x.status = 'active' AND ml._follows(x, p_model, p_alias) ORDER BY x.id LOOP
    IF d.model = p_model AND d.alias = p_alias AND d.options ? 'variants' THEN
      UPDATE ml._deployments SET options = options - 'variants' WHERE id = d.id;
      RAISE NOTICE 'deployment "%" serves %@% alone now (its split ended)', d.name, p_model, p_version;
    END IF;
    PERFORM ml._activate(d.id, false);
    IF d.model = p_model AND d.alias = p_alias AND coalesce((d.options->>'rescore_on_promote')::boolean, false) THEN
      PERFORM ml._start_run(d.id, 'promote');
    END IF;
  END LOOP;
  PERFORM pg_notify('pgscore_config', 'alias');
END
$$;

CREATE OR REPLACE FUNCTION ml.promote(name text, version int, alias text DEFAULT 'production')
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
  v_current int;
  v_history int[];
BEGIN
  IF alias IS NULL OR alias !~ '^[A-Za-z_][A-Za-z0-9_-]{0,62}$' THEN
    RAISE EXCEPTION 'alias % is not valid', coalesce(quote_literal(alias), 'NULL')
      USING ERRCODE = 'invalid_parameter_value', HINT = 'An alias starts with a letter or "_" (it cannot be a number).';
  END IF;
  PERFORM ml._lock_task('model:' || name);
  SELECT a.version, a.history INTO v_current, v_history FROM ml._aliases a WHERE a.model = name AND a.alias = alias;
  IF v_current = version THEN
    RETURN;
  END IF;
  PERFORM ml._point_alias(name, alias, version,
    CASE WHEN v_current IS NULL THEN '{}'::int[] ELSE v_history || v_current END);
END
$$;

CREATE OR REPLACE FUNCTION ml.rollback(name text, alias text DEFAULT 'production')
RETURNS int
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
  v_history int[];
  v_previous int;
BEGIN
  PERFORM ml._lock_task('model:' || name);
  SELECT a.history INTO v_history FROM ml._aliases a WHERE a.model = name AND a.alias = alias;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'model % has no alias %', name, alias USING ERRCODE = 'no_data_found';
  END IF;
  IF cardinality(v_history) = 0 THEN
    RAISE EXCEPTION 'alias %@% has no earlier version to roll back to', name, alias USING ERRCODE = 'no_data_found';
  END IF;
  v_previous := v_history[cardinality(v_history)];
  PERFORM ml._point_alias(name, alias, v_previous, v_history[1:cardinality(v_history) - 1]);
  RETURN v_previous;
END
$$;

-- A model's size in bytes: its first part and the others (ml._model_parts). At most 2 GiB - 1,
-- the most onnxruntime reads from one file (protobuf), so an int.
CREATE OR REPLACE FUNCTION ml._model_size(p_name text, p_version int, p_onnx bytea)
RETURNS int
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT (length(p_onnx) + coalesce((SELECT sum(length(p.bytes)) FROM ml._model_parts p
                                      WHERE p.name = p_name AND p.version = p_version), 0))::int
$$;

CREATE OR REPLACE VIEW ml.models AS
SELECT m.name,
       m.version,
       coalesce(array_agg(a.alias ORDER BY a.alias) FILTER (WHERE a.alias IS NOT NULL), '{}') AS aliases,
       CASE WHEN m.load_error IS NOT NULL THEN 'invalid'
            WHEN m.signature IS NULL THEN 'unvalidated'
            ELSE 'ready' END AS status,
       m.load_error,
       m.signature,
       m.metadata,
       ml._model_size(m.name, m.version, m.onnx) AS size_bytes,
       m.sha256,
       m.created_at
  FROM ml._models m
  LEFT JOIN ml._aliases a ON a.model = m.name AND a.version = m.version
 GROUP BY m.name, m.version;

-- Whether a model reference as a deployment names it ('churn', 'churn@3', 'churn@staging')
-- resolves to p_model, and to p_version when it is given.
CREATE OR REPLACE FUNCTION ml._ref_uses(p_ref text, p_model text, p_version int)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT r[1] = p_model
     AND (p_version IS NULL
          OR CASE WHEN r[2] ~ '^\d+$' THEN r[2]::int = p_version
                  ELSE ml._resolve_version(p_model, NULL, coalesce(r[2], 'production')) = p_version END)
    FROM (SELECT regexp_match(coalesce(p_ref, ''), '^([^@]+)(?:@(.+))?$') AS r) x
$$;

-- Removes a model version, or every version of a model (version NULL). Refuses while a
-- deployment scores with it: as its model (pinned, or through the alias it follows), as a
-- variant of its split or as its shadow, whatever the deployment's status. An alias that pointed
-- at a removed version and that no deployment follows goes back to the newest version left in
-- its history (as ml.rollback would), or is dropped when none is left; removed versions leave
-- every alias's history. Baselines go with their version; the prediction log and drift counts
-- keep naming it. Version numbers are never given again. Returns how many versions it removed.
CREATE OR REPLACE FUNCTION ml.remove_model(name text, version int DEFAULT NULL)
RETURNS int
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
  v_versions int[];
  v_user record;
  v_alias record;
  v_history int[];
BEGIN
  -- The lock ml.register_model, ml.promote and ml.rollback take: no alias moves meanwhile.
  PERFORM ml._lock_task('model:' || name);
  SELECT array_agg(m.version ORDER BY m.version) INTO v_versions
    FROM ml._models m WHERE m.name = name AND (version IS NULL OR m.version = version);
  IF v_versions IS NULL THEN
    IF NOT EXISTS (SELECT 1 FROM ml._models m WHERE m.name = name) THEN
      RAISE EXCEPTION 'model % is not registered', coalesce(quote_literal(name), 'NULL') USING ERRCODE = 'no_data_found';
    END IF;
    RAISE EXCEPTION 'model %@% does not exist (versions: %)', name, version,
      (SELECT string_agg(m.version::text, ', ' ORDER BY m.version) FROM ml._models m WHERE m.name = name)
      USING ERRCODE = 'no_data_found';
  END IF;

  SELECT d.name AS deployment, u.ref, u.what,
         ml._resolve_version(name, CASE WHEN u.ref ~ '@\d+$' THEN split_part(u.ref, '@', 2)::int END,
                             CASE WHEN u.ref !~ '@\d+$' THEN coalesce(nullif(split_part(u.ref, '@', 2), ''), 'production') END) AS resolved
    INTO v_user
    FROM ml._deployments d
    CROSS JOIN LATERAL (
      SELECT d.model || coalesce('@' || d.version, '@' || d.alias) AS ref, 'scores with' AS what
      UNION ALL SELECT k, 'splits its rows to' FROM jsonb_object_keys(coalesce(d.options->'variants', '{}')) k
      UNION ALL SELECT d.options->>'shadow', 'shadows with' WHERE d.options ? 'shadow') u
   WHERE EXISTS (SELECT 1 FROM unnest(v_versions) v WHERE ml._ref_uses(u.ref, name, v))
   ORDER BY d.name
   LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION 'model %@% is in use: deployment "%" % %', name, v_user.resolved, v_user.deployment, v_user.what, v_user.ref
      USING ERRCODE = 'object_in_use',
            HINT = CASE v_user.what
              WHEN 'scores with' THEN format('Undeploy it (ml.undeploy(%L)) or point it at another version first (ml.promote, or deploy it pinned to another version).', v_user.deployment)
              WHEN 'splits its rows to' THEN format('End the split first: ml.split(%L, NULL), or a split without %s.', v_user.deployment, v_user.ref)
              ELSE format('Promote the shadow (ml.promote_shadow(%L)), or undeploy and deploy again without it.', v_user.deployment) END;
  END IF;

  FOR v_alias IN SELECT a.* FROM ml._aliases a WHERE a.model = name ORDER BY a.alias LOOP
    v_history := ARRAY(SELECT h FROM unnest(v_alias.history) WITH ORDINALITY x(h, n) WHERE h <> ALL (v_versions) ORDER BY n);
    IF NOT v_alias.version = ANY (v_versions) THEN
      UPDATE ml._aliases a SET history = v_history WHERE a.model = name AND a.alias = v_alias.alias AND a.history <> v_history;
    ELSIF cardinality(v_history) > 0 THEN
      UPDATE ml._aliases a SET version = v_history[cardinality(v_history)], history = v_history[1:cardinality(v_history) - 1], updated_at = now()
       WHERE a.model = name AND a.alias = v_alias.alias;
      RAISE NOTICE 'alias %@% points at version % again', name, v_alias.alias, v_history[cardinality(v_history)];
    ELSE
      DELETE FROM ml._aliases a WHERE a.model = name AND a.alias = v_alias.alias;
      RAISE NOTICE 'alias %@% is removed: it had no other version', name, v_alias.alias;
    END IF;
  END LOOP;

  INSERT INTO ml._removed_models (name, version, sha256, size_bytes)
  SELECT m.name, m.version, m.sha256, ml._model_size(m.name, m.version, m.onnx) FROM ml._models m
   WHERE m.name = name AND m.version = ANY (v_versions);
  DELETE FROM ml._models m WHERE m.name = name AND m.version = ANY (v_versions);
  -- Workers let go of the sessions they held.
  PERFORM pg_notify('pgscore_config', 'model');
  RETURN cardinality(v_versions);
END
$$;
