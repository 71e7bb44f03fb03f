-- `pgscore migrate` calls ml._rebuild_deployments after re-applying these files: every
-- deployment's generated objects (queue layout, trigger function, triggers, grants) are rebuilt
-- by the current code, so an upgraded database equals a fresh install and keeps its queued keys.
CREATE OR REPLACE FUNCTION ml._rebuild_deployments()
RETURNS TABLE (deployment text, status text, reason text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
  d ml._deployments;
BEGIN
  FOR d IN SELECT * FROM ml._deployments ORDER BY id LOOP
    IF d.status = 'active' THEN
      BEGIN
        PERFORM ml._activate(d.id, false, false);
        -- A changed plan was just installed; an unchanged one is rebuilt by the current code.
        IF (SELECT x.status = 'active' AND x.plan = d.plan FROM ml._deployments x WHERE x.id = d.id) THEN
          PERFORM ml._install(d.id, d.name, d.source, d.plan);
        END IF;
      EXCEPTION WHEN OTHERS THEN
        PERFORM ml._invalidate(d.id, format('pgscore migrate could not rebuild it: %s', SQLERRM));
      END;
    ELSIF d.status = 'invalid' AND d.plan IS NOT NULL
          AND to_regclass(format('ml.%I', format('_queue_%s', d.id))) IS NOT NULL THEN
      -- Its queued keys wait for ml.deploy in the current layout. A table no write could reach
      -- (ml._invalidate_unwritable) keeps its triggers: their function writes that layout too.
      BEGIN
        PERFORM ml._install_queue_table(d.id, d.plan);
        IF EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgfoid = ml._enqueue_function(d.name)) THEN
          PERFORM ml._install_enqueue_function(d.id, d.plan);
        END IF;
      EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'pgscore migrate left the queue of invalid deployment "%" as it was: %', d.name, SQLERRM;
      END;
    END IF;
    RETURN QUERY SELECT x.name, x.status, x.reason FROM ml._deployments x WHERE x.id = d.id;
  END LOOP;
END
$$;
