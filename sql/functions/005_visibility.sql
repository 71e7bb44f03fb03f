-- Who may see what a deployment logged. The prediction log, baselines, drift counts, dead letters
-- and runs hold the deployed table's keys, inputs and predictions: a role sees a deployment's rows
-- only when it may SELECT the deployment's table. Superusers and pgscore's workers see everything
-- (the workers write it). A deployment whose table is gone is seen by them only.
--
-- The role is always passed in: views and row security policies pass current_user (the reader
-- itself); SECURITY DEFINER functions, in which current_user is the schema owner, pass
-- ml._reader().

CREATE OR REPLACE FUNCTION ml._may_read(p_role name, p_source oid)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT coalesce((SELECT r.rolsuper FROM pg_roles r WHERE r.rolname = p_role), false)
      OR pg_has_role(p_role, 'pgscore_worker', 'MEMBER')
      OR coalesce(has_table_privilege(p_role, p_source, 'SELECT'), false)
$$;

CREATE OR REPLACE FUNCTION ml._may_read_deployment(p_role name, p_deployment_id int)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT ml._may_read(p_role, (SELECT d.source FROM ml._deployments d WHERE d.id = p_deployment_id))
$$;

CREATE OR REPLACE FUNCTION ml._may_read_deployment_named(p_role name, p_deployment text)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT ml._may_read(p_role, (SELECT d.source FROM ml._deployments d WHERE d.name = p_deployment))
$$;

-- A baseline summarises a model version's training data, or the first rows a worker scored with
-- it: it is shown to a role that may read the table of every deployment serving the model (live,
-- a split's variant or a shadow).
CREATE OR REPLACE FUNCTION ml._may_read_model(p_role name, p_model text)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT NOT EXISTS (
    SELECT 1 FROM ml._deployments d
     WHERE (d.model = p_model
            OR d.plan->'shadow'->>'model' = p_model
            OR EXISTS (SELECT 1 FROM jsonb_array_elements(CASE jsonb_typeof(d.plan->'variants') WHEN 'array' THEN d.plan->'variants' ELSE '[]' END) v
                        WHERE v->>'model' = p_model))
       AND NOT ml._may_read(p_role, d.source))
$$;

-- The role on whose behalf a SECURITY DEFINER function reads: the role the session has set
-- (SET ROLE), else the one it logged in as.
CREATE OR REPLACE FUNCTION ml._reader()
RETURNS name
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT CASE WHEN current_setting('role') = 'none' THEN session_user ELSE current_setting('role')::name END
$$;
