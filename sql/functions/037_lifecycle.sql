-- Changing what a deployment serves at run time: ml.split sets the weights of several versions,
-- ml.promote_shadow makes the shadow model the live one. Both re-plan the deployment, and the
-- workers switch on their next batch without a restart.

-- The caller must be able to act as the owner of the deployment's table (as for ml.deploy):
-- these functions run as the schema owner, so membership of pgscore_admin alone is not enough
-- to run, change or remove someone else's deployment. p_action completes "can ..." in the error.
-- The caller is the session's role (ml._reader: SET ROLE counts). A table that no longer exists
-- (a dropped deployment) has no owner to check.
DROP FUNCTION IF EXISTS ml._require_owner(regclass);
CREATE OR REPLACE FUNCTION ml._require_owner(p_source regclass, p_action text DEFAULT 'deploy on it')
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF NOT pg_has_role(ml._reader(), (SELECT c.relowner FROM pg_class c WHERE c.oid = p_source), 'USAGE') THEN
    RAISE EXCEPTION 'only the owner of % (role %) can %', p_source,
      (SELECT quote_ident(r.rolname) FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner WHERE c.oid = p_source), p_action
      USING ERRCODE = 'insufficient_privilege',
            HINT = 'Run it as the table''s owner, or as a member of the owning role (GRANT <owner> TO <you>).';
  END IF;
END
$$;

-- Serves several model versions at once: weights like {"churn@3": 90, "churn@4": 10} (any
-- numbers; each version gets its share of the total). A row's version follows from a stable
-- hash of its primary key, so it keeps it when rescored. NULL or '{}' ends the split.
CREATE OR REPLACE FUNCTION ml.split(deployment text, weights jsonb)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  d ml._deployments := ml._active_deployment(deployment);
  v_options jsonb;
BEGIN
  PERFORM ml._require_owner(d.source);
  PERFORM 1 FROM ml._deployments x WHERE x.id = d.id FOR UPDATE;
  IF weights IS NULL OR weights = '{}' THEN
    v_options := d.options - 'variants';
  ELSE
    v_options := d.options || jsonb_build_object('variants', weights);
  END IF;
  PERFORM ml._check_options(v_options);
  UPDATE ml._deployments SET options = v_options WHERE id = d.id;
  PERFORM ml._activate(d.id, false);
END
$$;

-- Makes a deployment's shadow its live model: promotes the shadow's version on the alias the
-- deployment follows (so other deployments following it switch too), or pins the deployment to
-- it when it pins a version or the shadow is another model. The shadow option goes.
CREATE OR REPLACE FUNCTION ml.promote_shadow(deployment text)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  d ml._deployments := ml._active_deployment(deployment);
  v_shadow jsonb := d.plan->'shadow';
BEGIN
  PERFORM ml._require_owner(d.source);
  IF jsonb_typeof(v_shadow) IS DISTINCT FROM 'object' THEN
    RAISE EXCEPTION 'deployment "%" has no shadow model', d.name
      USING ERRCODE = 'object_not_in_prerequisite_state', HINT = 'Name one with ml.deploy(..., options => ''{"shadow": "churn@staging"}'').';
  END IF;
  UPDATE ml._deployments SET options = options - 'shadow' WHERE id = d.id;
  IF d.alias IS NOT NULL AND d.model = v_shadow->>'model' THEN
    PERFORM ml.promote(d.model, (v_shadow->>'version')::int, d.alias);
  ELSE
    UPDATE ml._deployments SET model = v_shadow->>'model', version = (v_shadow->>'version')::int, alias = NULL WHERE id = d.id;
  END IF;
  -- Drops the shadow from the plan (when the promotion did not re-plan it already).
  PERFORM ml._activate(d.id, false);
  IF NOT (d.alias IS NOT NULL AND d.model = v_shadow->>'model') AND coalesce((d.options->>'rescore_on_promote')::boolean, false) THEN
    PERFORM ml._start_run(d.id, 'promote');
  END IF;
  RETURN v_shadow->>'ref';
END
$$;
