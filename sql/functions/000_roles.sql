-- The group roles of the three kinds of user (README "Security"). Roles belong to the whole
-- cluster, so several databases with pgscore share them; creating them needs CREATEROLE once.
--   pgscore_admin   registers, promotes, deploys; reads everything in ml
--   pgscore_worker  claims queued rows, reads deployed inputs, writes only prediction columns
--   applications    nothing: their writes are queued by SECURITY DEFINER triggers
DO $$
DECLARE
  v_role text;
BEGIN
  FOREACH v_role IN ARRAY ARRAY['pgscore_admin', 'pgscore_worker'] LOOP
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = v_role) THEN
      BEGIN
        EXECUTE format('CREATE ROLE %I NOLOGIN', v_role);
      EXCEPTION
        WHEN duplicate_object OR unique_violation THEN NULL;  -- created by a concurrent migrate
        WHEN insufficient_privilege THEN
          RAISE EXCEPTION 'role % does not exist and % cannot create it', v_role, current_user
            USING ERRCODE = 'insufficient_privilege',
                  HINT = format('Run `pgscore migrate` once as a role with CREATEROLE, or CREATE ROLE %I NOLOGIN first.', v_role);
      END;
    END IF;
  END LOOP;
END
$$;
