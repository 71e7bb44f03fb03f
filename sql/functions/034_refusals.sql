-- Tables pgscore cannot serve correctly are refused at deploy, and a later change that makes a
-- deployed table one of them turns the deployment invalid with the reason (ml._activate runs
-- ml._check_servable; the event trigger and the worker's re-check re-run it). Each refusal
-- names what to change. See README "Security" for why each one is refused.

-- Whether a function pgscore's worker would run on a table's behalf may run in the worker's
-- session: a function of pg_catalog, or one owned by a superuser (p_superuser_ok: the same rule as
-- input expressions; not for trigger functions, whose arguments the table owner picks). Not a
-- SECURITY DEFINER function of the owner: it would run with the owner's rights, but in the
-- worker's session, whose settings (search_path) and prepared statements it can change for the
-- worker's next statements.
CREATE OR REPLACE FUNCTION ml._runs_safely(p_fn oid, p_superuser_ok boolean)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT p.pronamespace = 'pg_catalog'::regnamespace OR (p_superuser_ok AND o.rolsuper)
    FROM pg_proc p JOIN pg_roles o ON o.oid = p.proowner
   WHERE p.oid = p_fn
$$;
DROP FUNCTION IF EXISTS ml._runs_safely(oid, oid, boolean);

-- The WHEN condition that keeps a trigger off pgscore's write-back (only a member of
-- pgscore_worker's write-back runs with pgscore.writeback on and skips it), as Postgres shows it.
CREATE OR REPLACE FUNCTION ml._skips_write_back(p_trigger oid)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT substring(pg_get_triggerdef(p_trigger) FROM ' WHEN \((.*)\) EXECUTE (?:FUNCTION|PROCEDURE) ')
         = '(current_setting(''pgscore.writeback''::text, true) IS DISTINCT FROM ''on''::text)'
$$;

-- The functions an object (trigger WHEN, CHECK, generated column, index, policy, domain) calls,
-- directly or through an operator.
CREATE OR REPLACE FUNCTION ml._functions_of(p_classid oid, p_objid oid)
RETURNS SETOF oid
ROWS 4
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT d.refobjid FROM pg_depend d
   WHERE d.classid = p_classid AND d.objid = p_objid AND d.refclassid = 'pg_proc'::regclass
  UNION
  SELECT o.oprcode::oid FROM pg_depend d JOIN pg_operator o ON o.oid = d.refobjid
   WHERE d.classid = p_classid AND d.objid = p_objid AND d.refclassid = 'pg_operator'::regclass
$$;

-- Whether a permissive policy of the table applies to pgscore_worker for a command ('r' SELECT,
-- 'w' UPDATE, 'a' INSERT).
CREATE OR REPLACE FUNCTION ml._worker_policy(p_table oid, p_cmd "char")
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT EXISTS (SELECT 1 FROM pg_policy p
                  WHERE p.polrelid = p_table AND p.polpermissive AND p.polcmd IN ('*', p_cmd)
                    AND p.polroles && ARRAY[0::oid, 'pgscore_worker'::regrole::oid])
$$;

-- The user triggers of a table that fire on pgscore's write-back: on the source, enabled UPDATE
-- triggers for any column or for a written one (by name: a partition numbers its columns its own
-- way); on a side table, INSERT and UPDATE triggers. Not pgscore's own (in ml), nor the internal
-- triggers of foreign keys, which run as the table's owner.
CREATE OR REPLACE FUNCTION ml._write_back_triggers(p_table oid, p_is_target boolean, p_written text[])
RETURNS SETOF oid
ROWS 4
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT t.oid FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid
   WHERE t.tgrelid = p_table AND NOT t.tgisinternal AND t.tgenabled IN ('O', 'A')
     AND p.pronamespace <> 'ml'::regnamespace
     AND NOT coalesce(ml._skips_write_back(t.oid), false)
     AND CASE WHEN p_is_target THEN t.tgtype & (4 | 16) <> 0
              ELSE t.tgtype & 16 <> 0
                   AND (cardinality(t.tgattr::int2[]) = 0 OR EXISTS (
                     SELECT 1 FROM pg_attribute a
                      WHERE a.attrelid = p_table AND a.attnum = ANY (t.tgattr::int2[]) AND a.attname = ANY (p_written))) END
$$;

-- Raises when the table (p_source and, when partitioned, its partitions) or the side table
-- (p_target) cannot be served. p_written: the source's columns the write-back updates (by name:
-- partitions number their columns their own way); p_options: the deployment's options.
CREATE OR REPLACE FUNCTION ml._check_servable(p_source oid, p_target oid, p_written text[], p_options jsonb)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
-- Catalog queries of a few rows, whose estimates can still cross jit_above_cost: compiling them
-- took 160 ms on Debian's Postgres 15, on every re-check.
SET jit = off
AS $$
DECLARE
  v_rel text := ml._relname(p_source);
  v_other text;
  v_table regclass;
  v_is_target boolean;
  v_problem text;
BEGIN
  -- 1. A temporary table lives in the deploying session only: no worker can ever read it.
  FOR v_table IN SELECT c.oid FROM pg_class c WHERE c.oid IN (p_source, p_target) AND c.relpersistence = 't' LOOP
    RAISE EXCEPTION '% is a temporary table: the worker, in another session, can never see its rows', ml._relname(v_table)
      USING ERRCODE = 'feature_not_supported',
            HINT = 'Deploy on a permanent table (an UNLOGGED table is fine).';
  END LOOP;

  -- 1b. Capture from the WAL needs logical decoding, and a replica identity on every published table.
  IF p_options->>'capture' = 'wal' THEN
    v_problem := ml._capture_problem(p_source);
    IF v_problem IS NOT NULL THEN
      RAISE EXCEPTION '%', v_problem
        USING ERRCODE = 'feature_not_supported',
              HINT = CASE WHEN v_problem LIKE '%wal_level%'
                          THEN 'Set wal_level = logical (a restart), or deploy with the default "capture": "trigger". README "Capture from the WAL" lists what the server needs.'
                          ELSE 'Give the table a replica identity (REPLICA IDENTITY DEFAULT uses its primary key), or deploy with "capture": "trigger".' END;
    END IF;
  END IF;

  -- 2. Inheritance (not partitioning): a ctid or a key of the parent does not name one row of
  -- the tree, and rows written to a child fire no trigger of the parent.
  SELECT string_agg(ml._relname(i.inhrelid), ', ' ORDER BY ml._relname(i.inhrelid)) INTO v_other
    FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
   WHERE i.inhparent = p_source AND NOT c.relispartition;
  IF v_other IS NOT NULL THEN
    RAISE EXCEPTION '% has inheritance children (%): pgscore cannot tell their rows from the parent''s', v_rel, v_other
      USING ERRCODE = 'feature_not_supported',
            HINT = 'Use declarative partitioning (PARTITION BY), which pgscore supports, or deploy on a table outside any inheritance tree.';
  END IF;
  SELECT string_agg(ml._relname(i.inhparent), ', ' ORDER BY ml._relname(i.inhparent)) INTO v_other
    FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
   WHERE i.inhrelid = p_source AND NOT c.relispartition;
  IF v_other IS NOT NULL THEN
    RAISE EXCEPTION '% inherits from %: pgscore cannot serve a table of an inheritance tree', v_rel, v_other
      USING ERRCODE = 'feature_not_supported',
            HINT = 'Use declarative partitioning (PARTITION BY), which pgscore supports, or deploy on a table outside any inheritance tree.';
  END IF;

  FOR v_table, v_is_target IN
    SELECT t, false FROM ml._trigger_tables(p_source) t
    UNION ALL
    SELECT p_target::regclass, true WHERE p_target IS NOT NULL
  LOOP
    -- 3. Row-level security: rows the worker cannot see would never be scored.
    IF (SELECT c.relrowsecurity FROM pg_class c WHERE c.oid = v_table) THEN
      IF p_options->>'row_security' IS DISTINCT FROM 'worker_sees_all' THEN
        RAISE EXCEPTION '% has row-level security enabled: the worker would not see every row, and a row it cannot see is never scored', ml._relname(v_table)
          USING ERRCODE = 'insufficient_privilege',
                HINT = format('Add a policy that lets pgscore_worker see and %s every row (CREATE POLICY pgscore ON %s TO pgscore_worker USING (true)), then deploy with options {"row_security": "worker_sees_all"}.',
                              CASE WHEN v_is_target THEN 'insert' ELSE 'update' END, ml._relname(v_table));
      END IF;
      -- Policies for pgscore_worker (or PUBLIC) must let it read rows and write its part; or
      -- every member of pgscore_worker bypasses RLS (BYPASSRLS is not inherited from the group).
      IF NOT (ml._worker_policy(v_table, 'r'::"char") AND ml._worker_policy(v_table, (CASE WHEN v_is_target THEN 'a' ELSE 'w' END)::"char"))
         AND NOT (EXISTS (SELECT 1 FROM pg_auth_members m WHERE m.roleid = 'pgscore_worker'::regrole)
                  AND NOT EXISTS (SELECT 1 FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member
                                   WHERE m.roleid = 'pgscore_worker'::regrole AND NOT r.rolbypassrls)) THEN
        RAISE EXCEPTION 'option "row_security" says the worker sees every row of %, but no policy of it lets pgscore_worker see and % rows', ml._relname(v_table),
                        CASE WHEN v_is_target THEN 'insert' ELSE 'update' END
          USING ERRCODE = 'insufficient_privilege',
                HINT = format('CREATE POLICY pgscore ON %s TO pgscore_worker USING (true), or give every login role of pgscore_worker BYPASSRLS.', ml._relname(v_table));
      END IF;
    END IF;

    -- 4. Code the table's owner attached that would run in the worker's session, with the
    -- worker's rights over every deployed table: triggers that fire on the write-back (an UPDATE
    -- of the prediction columns; an INSERT into a side table), and the functions of trigger
    -- conditions, CHECK constraints, generated columns, indexes, policies and column domains.
    SELECT format('trigger %I on %s runs %s', t.tgname, ml._relname(v_table), t.tgfoid::regprocedure)
      INTO v_problem
      FROM ml._write_back_triggers(v_table, v_is_target, p_written) f
      JOIN pg_trigger t ON t.oid = f
     WHERE NOT ml._runs_safely(t.tgfoid, true)
     ORDER BY t.tgname LIMIT 1;
    IF v_problem IS NULL THEN
      SELECT format('%s on %s calls %s, which belongs to neither pg_catalog nor a superuser',
                    o.what, ml._relname(v_table), f.fn::regprocedure)
        INTO v_problem
        FROM (
          SELECT 'pg_trigger'::regclass AS classid, t.oid AS objid, format('the condition of trigger %I', t.tgname) AS what
            FROM ml._write_back_triggers(v_table, v_is_target, p_written) f JOIN pg_trigger t ON t.oid = f
          UNION ALL
          SELECT 'pg_constraint'::regclass, k.oid, format('constraint %I', k.conname) FROM pg_constraint k WHERE k.conrelid = v_table AND k.contype = 'c'
          UNION ALL
          SELECT 'pg_attrdef'::regclass, d.oid, format('the %s of column %I', CASE WHEN a.attgenerated <> '' THEN 'expression' ELSE 'default' END, a.attname)
            FROM pg_attrdef d JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
           WHERE d.adrelid = v_table AND (v_is_target OR a.attgenerated <> '')
          UNION ALL
          SELECT 'pg_class'::regclass, i.indexrelid, format('index %s', i.indexrelid::regclass) FROM pg_index i WHERE i.indrelid = v_table
          UNION ALL
          SELECT 'pg_policy'::regclass, p.oid, format('policy %I', p.polname) FROM pg_policy p
           WHERE p.polrelid = v_table AND (SELECT c.relrowsecurity FROM pg_class c WHERE c.oid = v_table)
          UNION ALL
          -- A domain's CHECK runs wherever a value is cast to it (the write-back casts keys and
          -- predictions, a side table's row is checked whole).
          SELECT 'pg_constraint'::regclass, k.oid, format('the type %s of column %I', a.atttypid::regtype, a.attname)
            FROM pg_attribute a JOIN pg_constraint k ON k.contypid = a.atttypid
           WHERE a.attrelid = v_table AND a.attnum > 0 AND NOT a.attisdropped
        ) o
        CROSS JOIN LATERAL ml._functions_of(o.classid, o.objid) f(fn)
        JOIN pg_class c ON c.oid = v_table
       WHERE NOT ml._runs_safely(f.fn, true)
         -- A trigger's own function was checked above; this is about its WHEN condition.
         AND NOT (o.classid = 'pg_trigger'::regclass AND f.fn = (SELECT t.tgfoid FROM pg_trigger t WHERE t.oid = o.objid))
       ORDER BY o.what LIMIT 1;
    END IF;
    -- A rule on the write-back's command would rewrite it into something else.
    SELECT format('rule %I on %s', r.rulename, ml._relname(v_table)) INTO v_other FROM pg_rewrite r
     WHERE r.ev_class = v_table AND r.ev_type = CASE WHEN v_is_target THEN '3' ELSE '2' END::"char" AND r.ev_enabled <> 'D'
     ORDER BY r.rulename LIMIT 1;
    IF v_other IS NOT NULL THEN
      RAISE EXCEPTION '% rewrites the % pgscore writes predictions with', v_other, CASE WHEN v_is_target THEN 'INSERT' ELSE 'UPDATE' END
        USING ERRCODE = 'feature_not_supported', HINT = 'Drop the rule (a trigger does the same job), or deploy with a side table (option "target").';
    END IF;
    IF v_problem IS NOT NULL THEN
      RAISE EXCEPTION '%: it would run during the write-back in the worker''s session, whose rights reach every deployed table', v_problem
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'Keep the trigger off the write-back: list your own columns (UPDATE OF ...), or add WHEN (current_setting(''pgscore.writeback'', true) IS DISTINCT FROM ''on''); or disable it. For a constraint, index or column, use functions of pg_catalog.';
    END IF;
  END LOOP;
END
$$;

-- The source columns a deployment's write-back updates: prediction and provenance columns.
CREATE OR REPLACE FUNCTION ml._written_columns(p_plan jsonb)
RETURNS text[]
LANGUAGE sql IMMUTABLE
AS $$
  SELECT ARRAY(
    SELECT o->>'column' FROM jsonb_array_elements(p_plan->'outputs') o WHERE jsonb_typeof(p_plan->'target') IS DISTINCT FROM 'object'
    UNION ALL
    SELECT p->>'column' FROM jsonb_each(CASE WHEN jsonb_typeof(p_plan->'provenance') = 'object' THEN p_plan->'provenance' ELSE '{}' END) e(k, p))
$$;

-- Whether an active deployment's tables can still be served (the worker's re-check, where no
-- event trigger runs ml._check_servable after a change).
CREATE OR REPLACE FUNCTION ml._is_servable(d ml._deployments)
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  PERFORM ml._check_servable(d.source, (d.plan->'target'->>'oid')::oid, ml._written_columns(d.plan), d.options);
  RETURN true;
EXCEPTION WHEN OTHERS THEN
  RETURN false;
END
$$;

-- The tables whose deployments a DDL command may have made unservable: the table itself, the
-- parents it now inherits from, an index's table, a trigger's, a policy's or a rule's table, and
-- for a function, every table whose triggers, constraints, columns, indexes, policies or rules
-- call it. pgscore's own objects (in ml) change nothing here.
CREATE OR REPLACE FUNCTION ml._tables_touched(p_classid oid, p_objid oid)
RETURNS SETOF oid
ROWS 4
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT p_objid WHERE p_classid = 'pg_class'::regclass
  UNION
  SELECT i.inhparent FROM pg_inherits i WHERE p_classid = 'pg_class'::regclass AND i.inhrelid = p_objid
  UNION
  SELECT x.indrelid FROM pg_index x WHERE p_classid = 'pg_class'::regclass AND x.indexrelid = p_objid
  UNION
  SELECT t.tgrelid FROM pg_trigger t JOIN pg_proc f ON f.oid = t.tgfoid
   WHERE p_classid = 'pg_trigger'::regclass AND t.oid = p_objid AND f.pronamespace <> 'ml'::regnamespace
  UNION
  SELECT p.polrelid FROM pg_policy p WHERE p_classid = 'pg_policy'::regclass AND p.oid = p_objid
  UNION
  SELECT r.ev_class FROM pg_rewrite r WHERE p_classid = 'pg_rewrite'::regclass AND r.oid = p_objid
  UNION
  SELECT t.tgrelid FROM pg_trigger t JOIN pg_proc f ON f.oid = t.tgfoid
   WHERE p_classid = 'pg_proc'::regclass AND t.tgfoid = p_objid AND f.pronamespace <> 'ml'::regnamespace
  UNION
  SELECT coalesce(t.tgrelid, k.conrelid, a.adrelid, x.indrelid, p.polrelid, r.ev_class)
    FROM pg_depend d JOIN pg_proc f ON f.oid = d.refobjid AND f.pronamespace <> 'ml'::regnamespace
    LEFT JOIN pg_trigger t ON d.classid = 'pg_trigger'::regclass AND t.oid = d.objid
    LEFT JOIN pg_constraint k ON d.classid = 'pg_constraint'::regclass AND k.oid = d.objid
    LEFT JOIN pg_attrdef a ON d.classid = 'pg_attrdef'::regclass AND a.oid = d.objid
    LEFT JOIN pg_index x ON d.classid = 'pg_class'::regclass AND x.indexrelid = d.objid
    LEFT JOIN pg_policy p ON d.classid = 'pg_policy'::regclass AND p.oid = d.objid
    LEFT JOIN pg_rewrite r ON d.classid = 'pg_rewrite'::regclass AND r.oid = d.objid
   WHERE p_classid = 'pg_proc'::regclass AND d.refclassid = 'pg_proc'::regclass AND d.refobjid = p_objid
     AND coalesce(t.tgrelid, k.conrelid, a.adrelid, x.indrelid, p.polrelid, r.ev_class) IS NOT NULL
$$;

-- Takes locks on application tables for pgscore's own DDL without making writers queue: each try
-- waits at most 50 ms (lock_timeout), and a failed try gives back every lock it took, sleeps
-- (20 ms, doubling, at most 1 s) and tries again. A pending ACCESS EXCLUSIVE request would make
-- every later INSERT wait behind it for as long as the transaction in front of it runs (an 8 s
-- transaction held a writer 6 s). After pgscore.lock_wait (default 30 s) it gives up.
CREATE OR REPLACE FUNCTION ml._lock_tables(p_tables regclass[], p_mode text, p_what text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET lock_timeout = '50ms'
AS $$
DECLARE
  v_table regclass;
  v_started timestamptz := clock_timestamp();
  v_limit interval := coalesce(nullif(current_setting('pgscore.lock_wait', true), ''), '30s')::interval;
  v_sleep float8 := 0.02;
  v_tries int := 0;
  v_waiting int[];
BEGIN
  IF p_mode NOT IN ('ACCESS SHARE', 'ROW EXCLUSIVE', 'SHARE ROW EXCLUSIVE', 'EXCLUSIVE', 'ACCESS EXCLUSIVE') THEN
    RAISE EXCEPTION 'lock mode % is not one pgscore takes', p_mode USING ERRCODE = 'invalid_parameter_value';
  END IF;
  LOOP
    v_tries := v_tries + 1;
    BEGIN
      FOREACH v_table IN ARRAY p_tables LOOP
        IF v_table IS NOT NULL AND EXISTS (SELECT 1 FROM pg_class WHERE oid = v_table) THEN
          EXECUTE format('LOCK TABLE %s IN %s MODE', v_table, p_mode);
        END IF;
      END LOOP;
      RETURN;
    EXCEPTION WHEN lock_not_available THEN
      -- A holder that waits for this transaction (for a lock it took before, such as the
      -- deployment row that a re-check inside an application's ALTER TABLE waits for) never
      -- lets go while this one waits: pgscore gives way at once, so that the application's
      -- statement goes on, and the caller runs again.
      SELECT array_agg(DISTINCT l.pid) INTO v_waiting FROM pg_locks l
       WHERE l.locktype = 'relation' AND l.relation = ANY (p_tables::oid[]) AND l.granted
         AND l.pid <> pg_backend_pid() AND pg_backend_pid() = ANY (pg_blocking_pids(l.pid));
      IF v_waiting IS NOT NULL THEN
        RAISE EXCEPTION '% gave way: session % holds % and waits for this transaction', p_what,
                        array_to_string(v_waiting, ', '), array_to_string(p_tables::text[], ', ')
          USING ERRCODE = 'lock_not_available',
                HINT = 'pgscore never makes an application wait for it. Run it again.';
      END IF;
      IF clock_timestamp() - v_started >= v_limit THEN
        RAISE EXCEPTION '% could not lock % within % (% tries): other transactions kept it busy', p_what,
                        array_to_string(p_tables::text[], ', '), v_limit, v_tries
          USING ERRCODE = 'lock_not_available',
                HINT = 'pgscore takes locks on application tables only in short tries, so that writers never queue behind it. Run it again once the long transactions on the table have ended (see pg_stat_activity), or raise pgscore.lock_wait.';
      END IF;
    END;
    PERFORM pg_sleep(v_sleep * (0.5 + random()));
    v_sleep := least(v_sleep * 2, 1);
  END LOOP;
END
$$;

-- Claimed keys whose row the worker did not find (src/queue/claim.ts): a row that still exists
-- is hidden from the worker by row-level security, and becomes a dead letter that says so
-- instead of vanishing as if deleted. Runs as the schema owner, who sees every row when it is a
-- superuser (or owns the table or has BYPASSRLS). p_keys: a JSON array of key-text arrays.
-- Returns how many dead letters it recorded.
CREATE OR REPLACE FUNCTION ml._dead_letter_unseen(p_id int, p_keys jsonb)
RETURNS int
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  d ml._deployments;
  v_rel text;
  v_n int;
BEGIN
  SELECT * INTO d FROM ml._deployments WHERE id = p_id;
  v_rel := ml._relname(d.source);
  IF d.plan IS NULL OR v_rel IS NULL OR jsonb_typeof(p_keys) IS DISTINCT FROM 'array' THEN
    RETURN 0;
  END IF;
  EXECUTE format(
    'INSERT INTO ml._dead_letters AS e (deployment_id, row_key, reason)
     SELECT $1, jsonb_build_object(%s), $3 FROM %s t JOIN jsonb_array_elements($2) k(v) ON %s
     ON CONFLICT (deployment_id, row_key) DO UPDATE SET reason = excluded.reason, attempts = e.attempts + 1, last_seen = now()',
    (SELECT string_agg(format('%L, t.%I', k->>'column', k->>'column'), ', ' ORDER BY i) FROM jsonb_array_elements(d.plan->'keys') WITH ORDINALITY x(k, i)),
    v_rel,
    (SELECT string_agg(format('t.%I = (k.v->>%s)::%s', k->>'column', i - 1, k->>'type'), ' AND ' ORDER BY i)
       FROM jsonb_array_elements(d.plan->'keys') WITH ORDINALITY x(k, i)))
  USING p_id, p_keys,
        format('row-level security on %s hides this row from the worker: no policy lets pgscore_worker see it, so it was not scored', v_rel);
  GET DIAGNOSTICS v_n = ROW_COUNT;
  IF v_n > 0 THEN
    RAISE WARNING 'pgscore: % row(s) of % are hidden from the worker by row-level security and were dead-lettered', v_n, v_rel;
  END IF;
  RETURN v_n;
END
$$;
REVOKE ALL ON FUNCTION ml._dead_letter_unseen(int, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ml._dead_letter_unseen(int, jsonb) TO pgscore_worker;

-- The keys of the rows in a range entry (ml._enqueue_ranges_sql), read with the installer's
-- rights: the claim reads ranges itself, except on a table under row-level security, where it
-- takes their keys from here and looks each one up as the worker. A row the worker cannot see
-- is then found missing, and ml._dead_letter_unseen records it, as for any queued key. Keys
-- only, of a deployment's own table: what the worker may already read of rows it can see, and
-- what a dead letter names of rows it cannot.
CREATE OR REPLACE FUNCTION ml._range_keys(p_id int, p_lo bigint, p_hi bigint)
RETURNS SETOF bigint
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  d ml._deployments;
  v_rel text;
BEGIN
  SELECT * INTO d FROM ml._deployments WHERE id = p_id;
  v_rel := ml._relname(d.source);
  IF d.plan IS NULL OR v_rel IS NULL OR NOT ml._ranged(d.plan) THEN
    RETURN;
  END IF;
  RETURN QUERY EXECUTE format('SELECT t.%1$I::bigint FROM %2$s t WHERE t.%1$I BETWEEN $1 AND $2', d.plan->'keys'->0->>'column', v_rel)
    USING p_lo, p_hi;
END
$$;
REVOKE ALL ON FUNCTION ml._range_keys(int, bigint, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ml._range_keys(int, bigint, bigint) TO pgscore_worker;
