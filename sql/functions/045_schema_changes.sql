-- Schema changes under a deployment. An event trigger re-plans every deployment of a table
-- that ALTER TABLE changed, and marks deployments dropped with their table. Where event
-- triggers cannot be created (migrate ran without superuser), the worker calls
-- ml._recheck_deployments after a failed batch and on every reload, which finds the same.
-- Neither ever fails the statement that changed the table (invariant 8).

-- Whether the table still has every column the plan names, at the same place (attnum) and of
-- the same type, and the same primary key.
CREATE OR REPLACE FUNCTION ml._plan_matches(p_source oid, p_plan jsonb)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  WITH wanted AS (
    SELECT k->>'column' AS name, (k->>'attnum')::int2 AS attnum, k->>'type' AS type FROM jsonb_array_elements(p_plan->'keys') k
    UNION ALL
    SELECT s->>'column', (s->>'attnum')::int2, s->>'type'
      FROM jsonb_array_elements(p_plan->'inputs') i, jsonb_array_elements(i->'sources') s WHERE s ? 'column'
    UNION ALL
    SELECT c->>'column', (c->>'attnum')::int2, NULL
      FROM jsonb_array_elements(p_plan->'inputs') i, jsonb_array_elements(i->'sources') s, jsonb_array_elements(s->'columns') c
     WHERE s ? 'expr'
    UNION ALL
    SELECT o->>'column', (o->>'attnum')::int2, NULL FROM jsonb_array_elements(p_plan->'outputs') o
     WHERE jsonb_typeof(p_plan->'target') IS DISTINCT FROM 'object'
    UNION ALL
    SELECT p->>'column', (p->>'attnum')::int2, p->>'sql_type'
      FROM jsonb_each(CASE WHEN jsonb_typeof(p_plan->'provenance') = 'object' THEN p_plan->'provenance' ELSE '{}' END) e(k, p)
  )
  SELECT coalesce((p_plan->>'version')::int, 1) = ml._plan_version()
     -- A side table still has the prediction columns where the plan found them.
     AND (jsonb_typeof(p_plan->'target') IS DISTINCT FROM 'object' OR NOT EXISTS (
       SELECT 1 FROM jsonb_array_elements(p_plan->'outputs') o
         LEFT JOIN pg_attribute a ON a.attrelid = (p_plan->'target'->>'oid')::oid AND a.attnum = (o->>'attnum')::int2 AND NOT a.attisdropped
        WHERE a.attname IS DISTINCT FROM o->>'column'))
     AND NOT EXISTS (
       SELECT 1 FROM wanted w
         LEFT JOIN pg_attribute a ON a.attrelid = p_source AND a.attnum = w.attnum AND NOT a.attisdropped
        WHERE a.attname IS DISTINCT FROM w.name
           OR (w.type IS NOT NULL AND w.type NOT IN (format_type(a.atttypid, a.atttypmod), format_type(a.atttypid, NULL))))
     AND (SELECT array_agg(k.attnum ORDER BY k.ord) FROM pg_index i, unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, ord)
           WHERE i.indrelid = p_source AND i.indisprimary)
         = (SELECT array_agg((k->>'attnum')::int2 ORDER BY n) FROM jsonb_array_elements(p_plan->'keys') WITH ORDINALITY x(k, n))
$$;

-- Whether event triggers watch schema changes (ml._on_alter_table, ml._on_drop): then a change
-- that makes a table unservable is caught as it happens, and the worker's re-check is a safety
-- net; without them, every re-check looks (a catalog query per deployment).
CREATE OR REPLACE FUNCTION ml._schema_watched()
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT count(*) = 2 FROM pg_event_trigger WHERE evtname IN ('pgscore_alter_table', 'pgscore_drop') AND evtenabled <> 'D'
$$;

-- One deployment of the worker's check: one whose table changed is re-planned (active or
-- invalid), one whose table is gone is marked dropped, a pending one whose model has been read
-- by now is activated. Returns whether it changed state.
CREATE OR REPLACE FUNCTION ml._recheck_one(d ml._deployments, p_watched boolean)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF ml._relname(d.source) IS NULL THEN
    PERFORM ml._mark_dropped(d.id);
    RETURN true;
  ELSIF d.status = 'active' AND NOT (ml._plan_matches(d.source, d.plan) AND ml._triggers_complete(d.name, d.source)
                                     AND (p_watched OR ml._is_servable(d))) THEN
    -- A deployment that a DBA call or DDL holds right now is theirs to re-plan; the next round
    -- looks again.
    RETURN ml._recheck(d.id, format('table %s changed', ml._relname(d.source)), 0) <> 'busy';
  ELSIF d.status = 'pending' AND EXISTS (
      SELECT 1 FROM ml._models m
       WHERE m.name = d.model AND m.version = ml._resolve_version(d.model, d.version, d.alias)
         AND (m.signature IS NOT NULL OR m.load_error IS NOT NULL))
      AND ml._lock_deployment(d.id, 0) THEN
    BEGIN
      PERFORM ml._activate(d.id, true);
    EXCEPTION
      WHEN lock_not_available THEN
        RETURN false;  -- gave way to a session that waits for this one; the next round activates it
      WHEN OTHERS THEN
        PERFORM ml._invalidate(d.id, SQLERRM);
    END;
    RETURN true;
  END IF;
  RETURN false;
END
$$;

-- The worker's check of every active and pending deployment. Returns how many changed state.
-- (Workers of release 2026-12-06 and before call it on every reload.)
CREATE OR REPLACE FUNCTION ml._recheck_deployments()
RETURNS int
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  d ml._deployments;
  v_changed int := 0;
  v_watched boolean := ml._schema_watched();
BEGIN
  FOR d IN SELECT * FROM ml._deployments WHERE status IN ('active', 'pending') ORDER BY id LOOP
    IF ml._recheck_one(d, v_watched) THEN
      v_changed := v_changed + 1;
    END IF;
  END LOOP;
  RETURN v_changed;
END
$$;

-- The worker's check on each reload, within a time budget: re-planning a deployment to compare
-- costs tens of ms (40 s for 1,000 deployments on a busy server, every 30 s), so where event
-- triggers watch schema changes, each reload checks the active deployments after p_after (by
-- id) until p_budget_ms is spent, and the next reload goes on from next_after (NULL: it went
-- round; start again at 0). Pending deployments are checked every time; without event
-- triggers, every deployment is (the budget does not apply).
CREATE OR REPLACE FUNCTION ml._recheck_deployments(p_after int, p_budget_ms int)
RETURNS TABLE (changed int, next_after int)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  d ml._deployments;
  v_started timestamptz := clock_timestamp();
  v_watched boolean := ml._schema_watched();
BEGIN
  changed := 0;
  next_after := NULL;
  FOR d IN SELECT * FROM ml._deployments x WHERE x.status = 'pending' ORDER BY x.id LOOP
    IF ml._recheck_one(d, v_watched) THEN
      changed := changed + 1;
    END IF;
  END LOOP;
  FOR d IN SELECT * FROM ml._deployments x WHERE x.status = 'active' AND (x.id > p_after OR NOT v_watched) ORDER BY x.id LOOP
    IF ml._recheck_one(d, v_watched) THEN
      changed := changed + 1;
    END IF;
    -- At least one per call: the round always moves on.
    IF v_watched AND clock_timestamp() - v_started > p_budget_ms * interval '1 millisecond' THEN
      next_after := d.id;
      EXIT;
    END IF;
  END LOOP;
  RETURN NEXT;
END
$$;

CREATE OR REPLACE FUNCTION ml._on_alter_table()
RETURNS event_trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  r record;
BEGIN
  IF current_setting('pgscore.activating', true) = 'on' THEN
    RETURN;  -- pgscore's own ALTER TABLE, inside ml._activate
  END IF;
  FOR r IN
    -- A new partition (CREATE TABLE ... PARTITION OF) belongs to the deployments of its ancestors;
    -- a trigger, policy, rule, index or function to the tables it is attached to (or called by);
    -- a new inheritance child (CREATE TABLE ... INHERITS, ALTER TABLE ... INHERIT) to its parent.
    SELECT DISTINCT ON (d.id) d.id, c.command_tag, c.object_identity
      FROM pg_event_trigger_ddl_commands() c
      CROSS JOIN LATERAL ml._tables_touched(c.classid, c.objid) t(relid)
      JOIN ml._deployments d ON d.status = 'active'
       AND (d.source = t.relid OR d.source IN (SELECT a.relid FROM pg_partition_ancestors(t.relid) a)
            OR (d.plan->'target'->>'oid')::oid = t.relid)
     ORDER BY d.id
  LOOP
    PERFORM ml._recheck(r.id, format('after %s %s', r.command_tag, r.object_identity));
  END LOOP;
EXCEPTION WHEN OTHERS THEN
  RAISE WARNING 'pgscore could not check its deployments after %: %', tg_tag, SQLERRM
    USING HINT = 'The worker checks them again on its next reload.';
END
$$;

CREATE OR REPLACE FUNCTION ml._on_drop()
RETURNS event_trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_id int;
BEGIN
  FOR v_id IN
    SELECT DISTINCT d.id FROM pg_event_trigger_dropped_objects() o
      JOIN ml._deployments d ON d.source = o.objid AND d.status <> 'dropped'
     WHERE o.classid = 'pg_class'::regclass AND o.objsubid = 0
  LOOP
    PERFORM ml._mark_dropped(v_id);
  END LOOP;
  -- A dropped side table turns its deployments invalid (ml.deploy again creates it anew).
  FOR v_id IN
    SELECT DISTINCT d.id FROM pg_event_trigger_dropped_objects() o
      JOIN ml._deployments d ON (d.plan->'target'->>'oid')::oid = o.objid AND d.status = 'active'
     WHERE o.classid = 'pg_class'::regclass AND o.objsubid = 0
  LOOP
    PERFORM ml._recheck(v_id, format('after %s', tg_tag));
  END LOOP;
EXCEPTION WHEN OTHERS THEN
  RAISE WARNING 'pgscore could not mark deployments of dropped tables after %: %', tg_tag, SQLERRM
    USING HINT = 'The worker marks them on its next reload.';
END
$$;

-- Event triggers need a superuser. Without them the worker finds schema changes itself.
DO $$
BEGIN
  IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
    DROP EVENT TRIGGER IF EXISTS pgscore_alter_table;
    DROP EVENT TRIGGER IF EXISTS pgscore_drop;
    CREATE EVENT TRIGGER pgscore_alter_table ON ddl_command_end
      WHEN TAG IN ('ALTER TABLE', 'CREATE TABLE', 'CREATE TRIGGER', 'ALTER TRIGGER', 'CREATE POLICY', 'ALTER POLICY',
                   'CREATE RULE', 'CREATE INDEX', 'CREATE FUNCTION', 'ALTER FUNCTION')
      EXECUTE FUNCTION ml._on_alter_table();
    CREATE EVENT TRIGGER pgscore_drop ON sql_drop WHEN TAG IN ('DROP TABLE', 'DROP SCHEMA', 'DROP OWNED')
      EXECUTE FUNCTION ml._on_drop();
  ELSE
    RAISE NOTICE 'pgscore: % is not a superuser, so no event triggers were installed', current_user
      USING DETAIL = 'The worker detects schema changes on its own, after the first failed batch or within seconds.';
  END IF;
END
$$;
