-- What a deployment generates, rebuilt from its plan on every activation and by every
-- `pgscore migrate` (so an upgrade carries old deployments onto the current layout):
--   ml._queue_<id>       primary keys waiting to be scored, in chunks (see ml._enqueue_sql)
--   ml._enqueue_<id>()   the statement-level trigger function that fills it
--   two triggers on the source table, "pgscore_<deployment>_insert" and "..._update"
--   the worker role's grants on the table: its key and input columns, its prediction columns.
-- The triggers are statement-level with transition tables: one queue INSERT per statement,
-- and at most one NOTIFY, naming the deployment, sent only when a worker sleeps
-- (ml._wake_worker, sql/functions/027_locks.sql).

-- Queue rows hold primary keys in chunks: one row per statement for single-row writes, one per
-- 100 rows for bulk statements (so a million-row INSERT adds 10,000 queue rows, not a million).
-- A bulk INSERT whose keys are one integer column and nearly contiguous (a serial or identity
-- key, a load in key order) queues key ranges instead, one per 500 key values
-- (ml._enqueue_ranges_sql): a million-row INSERT adds 2,000 small rows, and the claim reads each
-- range with one index range scan instead of a primary-key lookup per key.
-- Key column i of the table is the array column pgscore_k<i>; pgscore_n counts the keys. This
-- builds the INSERT that queues the keys selected by p_from (a query returning the key columns
-- in primary-key order).
CREATE OR REPLACE FUNCTION ml._enqueue_sql(p_id int, p_plan jsonb, p_from text, p_priority int)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT format(
    'INSERT INTO ml.%1$I (pgscore_priority, pgscore_n, %2$s)
     SELECT %3$s, count(*), %4$s
       FROM (SELECT %2$s, (row_number() OVER () - 1) / 100 AS pgscore_chunk FROM (%5$s) f(%2$s)) c
      GROUP BY pgscore_chunk',
    format('_queue_%s', p_id),
    string_agg(format('pgscore_k%s', k.i), ', ' ORDER BY k.i),
    p_priority,
    string_agg(format('array_agg(pgscore_k%s)', k.i), ', ' ORDER BY k.i),
    p_from)
  FROM jsonb_array_elements(p_plan->'keys') WITH ORDINALITY k(key, i)
$$;

-- Whether a deployment's bulk INSERTs may queue key ranges: its primary key is one integer column.
CREATE OR REPLACE FUNCTION ml._ranged(p_plan jsonb)
RETURNS boolean
LANGUAGE sql IMMUTABLE
AS $$
  SELECT jsonb_array_length(p_plan->'keys') = 1 AND p_plan->'keys'->0->>'type' IN ('smallint', 'integer', 'bigint')
$$;

-- Keys per range entry: the claim takes whole entries, so this is also the smallest batch a
-- ranged backlog is claimed in.
CREATE OR REPLACE FUNCTION ml._range_size()
RETURNS int
LANGUAGE sql IMMUTABLE
AS $$ SELECT 500 $$;

-- Creates the queue of a deployment, or brings an existing one (with its queued keys) to the
-- current layout. Fresh and upgraded queues go through the same steps, so they end up equal.
CREATE OR REPLACE FUNCTION ml._install_queue_table(p_id int, p_plan jsonb)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_queue text := format('_queue_%s', p_id);
  v_oid oid;
  v_key record;
  v_old record;
  v_fixed text[] := ARRAY['pgscore_seq', 'pgscore_priority', 'pgscore_queued_at', 'pgscore_n', 'pgscore_attempts', 'pgscore_not_before', 'pgscore_lo', 'pgscore_hi'];
  v_existing text[];
BEGIN
  IF to_regclass(format('ml.%I', v_queue)) IS NULL THEN
  EXECUTE format(
    'CREATE TABLE ml.%I (
       pgscore_seq       bigint GENERATED ALWAYS AS IDENTITY,
       pgscore_priority  smallint NOT NULL DEFAULT 0,
       pgscore_queued_at timestamptz NOT NULL DEFAULT statement_timestamp(),
       pgscore_n         int NOT NULL,
       %s)',
    v_queue,
    (SELECT string_agg(format('pgscore_k%s %s[] NOT NULL', k.i, k.key->>'type'), ', ' ORDER BY k.i)
       FROM jsonb_array_elements(p_plan->'keys') WITH ORDINALITY k(key, i)));
  END IF;
  v_oid := format('ml.%I', v_queue)::regclass;

  -- Plan version 1 named key columns after the table's; they are renamed by position. A key
  -- whose type changed (ALTER TABLE ... TYPE) is converted; a different key cannot be.
  SELECT array_agg(a.attname ORDER BY a.attnum) INTO v_existing
    FROM pg_attribute a WHERE a.attrelid = v_oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attname <> ALL (v_fixed);
  IF cardinality(v_existing) <> jsonb_array_length(p_plan->'keys') THEN
    RAISE EXCEPTION 'the primary key of the table changed from % to % columns; the queued keys no longer fit it',
      cardinality(v_existing), jsonb_array_length(p_plan->'keys')
      USING ERRCODE = 'invalid_table_definition',
            HINT = 'ml.undeploy drops the old queue; deploy again and ml.backfill to score every row.';
  END IF;
  FOR v_key IN SELECT k.i, k.key->>'type' AS type, v_existing[k.i] AS name
                 FROM jsonb_array_elements(p_plan->'keys') WITH ORDINALITY k(key, i) LOOP
    IF v_key.name <> format('pgscore_k%s', v_key.i) THEN
      EXECUTE format('ALTER TABLE ml.%I RENAME COLUMN %I TO %I', v_queue, v_key.name, format('pgscore_k%s', v_key.i));
    END IF;
    SELECT format_type(a.atttypid, a.atttypmod) AS type INTO v_old
      FROM pg_attribute a WHERE a.attrelid = v_oid AND a.attname = format('pgscore_k%s', v_key.i);
    IF v_old.type <> v_key.type || '[]' THEN
      EXECUTE format('ALTER TABLE ml.%1$I ALTER COLUMN %2$I TYPE %3$s[] USING %2$I::%3$s[]', v_queue, format('pgscore_k%s', v_key.i), v_key.type);
    END IF;
  END LOOP;

  -- Version 2: rows locked by someone else wait before they are claimed again.
  IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = v_oid AND attname = 'pgscore_attempts' AND NOT attisdropped) THEN
    EXECUTE format('ALTER TABLE ml.%I ADD COLUMN pgscore_attempts smallint NOT NULL DEFAULT 0, ADD COLUMN pgscore_not_before timestamptz', v_queue);
  END IF;
  -- Version 3: range entries (pgscore_lo .. pgscore_hi, both included; NULL in key entries).
  IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = v_oid AND attname = 'pgscore_lo' AND NOT attisdropped) THEN
    EXECUTE format('ALTER TABLE ml.%I ADD COLUMN pgscore_lo bigint, ADD COLUMN pgscore_hi bigint', v_queue);
  END IF;
  -- A key that is no longer one integer column (ALTER TABLE ... TYPE) cannot be read by range:
  -- its range entries become key entries, each key value of the range (a value no row has is
  -- found missing by the claim, like a deleted row's).
  IF NOT ml._ranged(p_plan) THEN
    EXECUTE format(
      'UPDATE ml.%1$I SET pgscore_k1 = ARRAY(SELECT g::text::%2$s FROM generate_series(pgscore_lo, pgscore_hi) g),
                          pgscore_n = pgscore_hi - pgscore_lo + 1, pgscore_lo = NULL, pgscore_hi = NULL
        WHERE pgscore_lo IS NOT NULL',
      v_queue, p_plan->'keys'->0->>'type');
  END IF;
  IF to_regclass(format('ml.%I', v_queue || '_claim')) IS NULL THEN
    EXECUTE format('CREATE INDEX %I ON ml.%I (pgscore_priority, pgscore_seq)', v_queue || '_claim', v_queue);
  END IF;
  EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON ml.%I TO pgscore_worker', v_queue);
  -- Admins see a queue's size in ml.status, not the table's keys it holds (090_privileges.sql).
END
$$;

-- The same for a bulk INSERT's trigger, as PL/pgSQL statements: the keys p_from selects are
-- gathered into one array per key column (one pass over the transition table), then cut into
-- slices of 100. Cheaper than numbering and grouping the rows (measured: a third of the trigger's
-- own cost on a 200k-row INSERT), but dearer for a single row (+20 us), which keeps its own path.
-- Needs variables pgscore_rows bigint and pgscore_keys<i> <key type>[].
CREATE OR REPLACE FUNCTION ml._enqueue_slices_sql(p_id int, p_plan jsonb, p_from text)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT format(
    'SELECT %1$s INTO %2$s FROM (%3$s) f(%4$s);
        pgscore_rows := coalesce(cardinality(pgscore_keys1), 0);
        INSERT INTO ml.%5$I (pgscore_n, %4$s)
        SELECT least(100, pgscore_rows - i + 1), %6$s FROM generate_series(1, pgscore_rows, 100) i',
    string_agg(format('array_agg(pgscore_k%s)', k.i), ', ' ORDER BY k.i),
    string_agg(format('pgscore_keys%s', k.i), ', ' ORDER BY k.i),
    p_from,
    string_agg(format('pgscore_k%s', k.i), ', ' ORDER BY k.i),
    format('_queue_%s', p_id),
    string_agg(format('pgscore_keys%1$s[i:i + 99]', k.i), ', ' ORDER BY k.i))
  FROM jsonb_array_elements(p_plan->'keys') WITH ORDINALITY k(key, i)
$$;

-- A bulk INSERT's keys as range entries, as PL/pgSQL statements: when the inserted keys (from
-- p_from) span at most 1.25 times their number, one queue row per 500 key values that holds at
-- least one of them, with the count it holds (ml.status counts exactly), in key order; otherwise
-- the key slices (ml._enqueue_slices_sql). The claim reads a range's current rows by key; a row
-- another statement wrote inside the range is read too, and scored once more at most (the
-- write-back is idempotent). Needs variables pgscore_rows bigint (the statement's row count),
-- pgscore_first bigint, pgscore_last bigint and the slices'. Single-row writes never come here.
-- Nothing here can overflow: offsets are taken from the least key, and the span is checked
-- in numeric first.
CREATE OR REPLACE FUNCTION ml._enqueue_ranges_sql(p_id int, p_plan jsonb, p_from text)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT format(
    'SELECT min(k), max(k) INTO pgscore_first, pgscore_last FROM (%3$s) f(k);
        IF pgscore_last::numeric - pgscore_first < pgscore_rows * 1.25 THEN
          INSERT INTO ml.%1$I (pgscore_n, pgscore_k1, pgscore_lo, pgscore_hi)
          SELECT count(*), ''{}'', pgscore_first + b * %2$s, pgscore_first + b * %2$s + least(%2$s - 1, pgscore_last - pgscore_first - b * %2$s)
            FROM (SELECT (k::bigint - pgscore_first) / %2$s AS b FROM (%3$s) f(k)) s
           GROUP BY b ORDER BY b;
        ELSE
          %4$s;
        END IF',
    format('_queue_%s', p_id), ml._range_size(), p_from, ml._enqueue_slices_sql(p_id, p_plan, p_from))
$$;

-- Whether values of a type can be compared with IS DISTINCT FROM (a record comparison needs a
-- default btree or hash equality for each field): domains by their base type, arrays by their
-- element type. Unknown (NULL) types count as not comparable, so they are compared as text.
CREATE OR REPLACE FUNCTION ml._has_equality(p_type oid)
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  t pg_type;
BEGIN
  SELECT * INTO t FROM pg_type WHERE oid = p_type;
  IF NOT FOUND THEN
    RETURN false;
  ELSIF t.typtype = 'd' THEN
    RETURN ml._has_equality(t.typbasetype);
  ELSIF t.typelem <> 0 AND t.typsubscript = 'array_subscript_handler'::regproc THEN
    RETURN ml._has_equality(t.typelem);
  ELSIF t.typtype = 'e' THEN
    RETURN true;
  ELSIF t.typtype IN ('c', 'r', 'm', 'p') THEN
    RETURN false;
  END IF;
  RETURN EXISTS (SELECT 1 FROM pg_opclass oc JOIN pg_am am ON am.oid = oc.opcmethod
                  WHERE am.amname IN ('btree', 'hash') AND oc.opcdefault AND oc.opcintype = p_type);
END
$$;

-- The trigger function that queues the keys of inserted rows, and of updated rows whose inputs
-- (or key) changed. SECURITY DEFINER: applications need no rights on ml.
CREATE OR REPLACE FUNCTION ml._install_enqueue_function(p_id int, p_plan jsonb)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_function text := format('_enqueue_%s', p_id);
  v_keys text;
  v_n_keys text;
  v_o_keys text;
  v_join text;
  v_old_unmatched text := '';
  v_first_key text;
  v_features text;
BEGIN
  SELECT string_agg(format('%I', k->>'column'), ', '),
         string_agg(format('n.%I', k->>'column'), ', '),
         string_agg(format('o.%I', k->>'column'), ', '),
         string_agg(format('o.%1$I = n.%1$I', k->>'column'), ' AND '),
         format('%I', (array_agg(k->>'column'))[1])
    INTO v_keys, v_n_keys, v_o_keys, v_join, v_first_key
    FROM jsonb_array_elements(p_plan->'keys') k;
  -- On a partitioned table, a MERGE that inserts a row and then updates another gives the
  -- UPDATE's new-row transition table the inserted row instead of the updated one (PostgreSQL
  -- 15 to 18). The updated row's old version is right: keys of old rows with no new row are
  -- queued too (for a key that changed, the claim finds no row, and nothing happens).
  IF (SELECT c.relkind FROM pg_class c JOIN ml._deployments d ON d.source = c.oid WHERE d.id = p_id) = 'p' THEN
    v_old_unmatched := format(
      ' UNION ALL SELECT %1$s FROM (SELECT %2$s FROM pgscore_old) o
         WHERE NOT EXISTS (SELECT 1 FROM pgscore_new n WHERE %3$s)',
      v_o_keys, v_keys, v_join);
  END IF;
  -- Whether an UPDATE changed a row's inputs is decided from the columns the inputs read, never by
  -- evaluating input expressions: an expression that fails on one row (a cast of 'abc', a division
  -- by zero) must not fail the application's statement. The claim evaluates them, where a failure
  -- becomes that row's dead letter.
  -- A column whose type has no equality (json, xml, point) is compared as text.
  SELECT 'ROW(' || coalesce(string_agg(DISTINCT
           CASE WHEN ml._has_equality(a.atttypid) THEN format('%I', t.c) ELSE format('%I::text', t.c) END, ', '), '') || ')'
    INTO v_features
    FROM (SELECT s->>'column' AS c
            FROM jsonb_array_elements(p_plan->'inputs') i, jsonb_array_elements(i->'sources') s
           WHERE s ? 'column'
          UNION ALL
          SELECT x->>'column'
            FROM jsonb_array_elements(p_plan->'inputs') i, jsonb_array_elements(i->'sources') s,
                 jsonb_array_elements(CASE WHEN s ? 'expr' THEN s->'columns' ELSE '[]' END) x) t
    LEFT JOIN pg_attribute a ON a.attrelid = (SELECT d.source FROM ml._deployments d WHERE d.id = p_id)
                            AND a.attname = t.c AND NOT a.attisdropped;

  EXECUTE format($f$
    CREATE OR REPLACE FUNCTION ml.%1$I() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $body$
    #variable_conflict use_column
    DECLARE
      pgscore_rows bigint;
      pgscore_first bigint;
      pgscore_last bigint;
      %4$s
    BEGIN
      IF TG_OP = 'INSERT' THEN
        SELECT count(*) INTO pgscore_rows FROM pgscore_new;
        IF pgscore_rows <= 100 THEN
          -- The common case (single-row writes): one queue row, without chunking machinery.
          INSERT INTO ml.%5$I (pgscore_n, %6$s) SELECT pgscore_rows, %7$s FROM pgscore_new HAVING count(*) > 0;
        ELSE
          %2$s;
        END IF;
      ELSE
        -- Only rows whose model inputs changed (or whose key changed) are scored again.
        %3$s;
      END IF;
      IF FOUND THEN PERFORM ml._wake_worker(%8$s); END IF;
      RETURN NULL;
    END
    $body$ $f$,
    v_function,
    CASE WHEN ml._ranged(p_plan) THEN ml._enqueue_ranges_sql(p_id, p_plan, format('SELECT %s FROM pgscore_new', v_keys))
         ELSE ml._enqueue_slices_sql(p_id, p_plan, format('SELECT %s FROM pgscore_new', v_keys)) END,
    ml._enqueue_sql(p_id, p_plan, format(
      'SELECT %1$s FROM (SELECT %2$s, %3$s AS features FROM pgscore_new) n
         LEFT JOIN (SELECT %2$s, %3$s AS features FROM pgscore_old) o ON %4$s
        WHERE o.%5$s IS NULL OR o.features IS DISTINCT FROM n.features%6$s',
      v_n_keys, v_keys, v_features, v_join, v_first_key, v_old_unmatched), 0),
    (SELECT string_agg(format('pgscore_keys%s %s[];', k.i, k.key->>'type'), ' ' ORDER BY k.i)
       FROM jsonb_array_elements(p_plan->'keys') WITH ORDINALITY k(key, i)),
    format('_queue_%s', p_id),
    (SELECT string_agg(format('pgscore_k%s', i), ', ' ORDER BY i) FROM generate_series(1, jsonb_array_length(p_plan->'keys')) i),
    (SELECT string_agg(format('array_agg(%I)', k->>'column'), ', ') FROM jsonb_array_elements(p_plan->'keys') k),
    p_id);
  -- Attached to another table, it would queue that table's keys on this deployment.
  EXECUTE format('REVOKE ALL ON FUNCTION ml.%I() FROM PUBLIC', v_function);
END
$$;

-- The WHEN of both triggers: the worker's own write-back (SET LOCAL pgscore.writeback = 'on')
-- is not queued again, and only a member of pgscore_worker can skip the triggers that way.
CREATE OR REPLACE FUNCTION ml._trigger_condition()
RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
  SELECT 'pg_catalog.current_setting(''pgscore.writeback'', true) IS DISTINCT FROM ''on'' '
         'OR NOT pg_catalog.pg_has_role(''pgscore_worker'', ''MEMBER'')'
$$;

-- The table and, when it is partitioned, every partition at every level: statement triggers fire
-- only on the table a statement names, and applications may write to a partition directly.
-- Read from pg_inherits, which takes no lock: pg_partition_tree locks every partition (ACCESS
-- SHARE, to the end of the transaction), and ml.undeploy, which lists them before it locks them
-- in short tries, then held a lock an application's ALTER TABLE waited for while it waited for
-- the table the ALTER held: a deadlock (the generated suite's F11).
CREATE OR REPLACE FUNCTION ml._trigger_tables(p_source oid)
RETURNS SETOF regclass
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  WITH RECURSIVE tree(relid) AS (
    SELECT c.oid FROM pg_class c WHERE c.oid = p_source
    UNION
    SELECT i.inhrelid FROM tree t JOIN pg_inherits i ON i.inhparent = t.relid
      JOIN pg_class c ON c.oid = i.inhrelid AND c.relispartition
  )
  SELECT relid::regclass FROM tree
$$;

CREATE OR REPLACE FUNCTION ml._drop_triggers(p_name text, p_source oid)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_table regclass;
BEGIN
  -- DROP TRIGGER takes ACCESS EXCLUSIVE: in short tries, all tables at once (see ml._lock_tables).
  PERFORM ml._lock_tables(ARRAY(
    SELECT DISTINCT t.tgrelid::regclass FROM pg_trigger t
     WHERE t.tgname IN (format('pgscore_%s_insert', p_name), format('pgscore_%s_update', p_name))
       AND (t.tgrelid IN (SELECT ml._trigger_tables(p_source)) OR t.tgfoid = ml._enqueue_function(p_name))
     ORDER BY 1), 'ACCESS EXCLUSIVE', 'pgscore (dropping its triggers)');
  -- Also from tables that left the tree (DETACH PARTITION) but still call this deployment's function.
  FOR v_table IN SELECT DISTINCT t.tgrelid::regclass FROM pg_trigger t
                  WHERE t.tgname IN (format('pgscore_%s_insert', p_name), format('pgscore_%s_update', p_name))
                    AND (t.tgrelid IN (SELECT ml._trigger_tables(p_source)) OR t.tgfoid = ml._enqueue_function(p_name)) LOOP
    EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', format('pgscore_%s_insert', p_name), v_table);
    EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', format('pgscore_%s_update', p_name), v_table);
  END LOOP;
END
$$;

-- The generated trigger function of a deployment (NULL when there is none).
CREATE OR REPLACE FUNCTION ml._enqueue_function(p_name text)
RETURNS regprocedure
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT to_regprocedure(format('ml.%I()', format('_enqueue_%s', d.id))) FROM ml._deployments d WHERE d.name = p_name
$$;

-- Whether a deployment's plan captures from the WAL (032_capture.sql).
CREATE OR REPLACE FUNCTION ml._captures_wal(p_plan jsonb)
RETURNS boolean
LANGUAGE sql IMMUTABLE
AS $$
  SELECT coalesce(p_plan->>'capture', 'trigger') = 'wal'
$$;

CREATE OR REPLACE FUNCTION ml._wants_triggers(p_plan jsonb)
RETURNS boolean
LANGUAGE sql IMMUTABLE
AS $$
  SELECT coalesce(p_plan->>'mode', 'live') <> 'batch' AND NOT ml._captures_wal(p_plan)
$$;

-- Whether the table and each of its partitions carry the deployment's two triggers (none for a
-- batch deployment), and no table outside the tree (a detached partition) still does.
CREATE OR REPLACE FUNCTION ml._triggers_complete(p_name text, p_source oid)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT CASE WHEN NOT ml._wants_triggers((SELECT d.plan FROM ml._deployments d WHERE d.name = p_name))
    THEN NOT EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgfoid = ml._enqueue_function(p_name))
    ELSE NOT EXISTS (
    SELECT 1 FROM ml._trigger_tables(p_source) r(rel)
     WHERE (SELECT count(*) FROM pg_trigger t
             WHERE t.tgrelid = r.rel AND t.tgname IN (format('pgscore_%s_insert', p_name), format('pgscore_%s_update', p_name))) <> 2)
  AND NOT EXISTS (
    SELECT 1 FROM pg_trigger t
     WHERE t.tgfoid = ml._enqueue_function(p_name) AND t.tgrelid NOT IN (SELECT ml._trigger_tables(p_source))) END
$$;

-- Earlier releases had ml._install_triggers(int, text, oid); the plan now says whether there are triggers.
DROP FUNCTION IF EXISTS ml._install_triggers(int, text, oid);

-- A batch deployment (mode 'batch') has no triggers: its rows are queued by runs only; nor has a
-- deployment that captures from the WAL (032_capture.sql).
CREATE OR REPLACE FUNCTION ml._install_triggers(p_id int, p_name text, p_source oid, p_plan jsonb)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_table regclass;
BEGIN
  PERFORM ml._drop_triggers(p_name, p_source);
  IF NOT ml._wants_triggers(p_plan) THEN
    RETURN;
  END IF;
  FOR v_table IN SELECT ml._trigger_tables(p_source) LOOP
    EXECUTE format(
      'CREATE TRIGGER %I AFTER INSERT ON %s REFERENCING NEW TABLE AS pgscore_new
       FOR EACH STATEMENT WHEN (%s) EXECUTE FUNCTION ml.%I()',
      format('pgscore_%s_insert', p_name), v_table, ml._trigger_condition(), format('_enqueue_%s', p_id));
    EXECUTE format(
      'CREATE TRIGGER %I AFTER UPDATE ON %s REFERENCING OLD TABLE AS pgscore_old NEW TABLE AS pgscore_new
       FOR EACH STATEMENT WHEN (%s) EXECUTE FUNCTION ml.%I()',
      format('pgscore_%s_update', p_name), v_table, ml._trigger_condition(), format('_enqueue_%s', p_id));
  END LOOP;
END
$$;

-- The worker role's rights on a table: read the key and input columns of its active
-- deployments (and the row version, tableoid, xmin and ctid, that the write-back checks), update their
-- prediction columns. Rebuilt from scratch so that nothing outlives the deployment that needed it.
CREATE OR REPLACE FUNCTION ml._grant_worker(p_source oid)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_rel text := ml._relname(p_source);
  v_read text;
  v_write text;
  v_schema name;
BEGIN
  IF v_rel IS NULL THEN
    RETURN;
  END IF;
  EXECUTE format('REVOKE ALL ON %s FROM pgscore_worker', v_rel);
  SELECT string_agg(DISTINCT format('%I', c), ', ') INTO v_read FROM (
    SELECT k->>'column' AS c FROM ml._deployments d, jsonb_array_elements(d.plan->'keys') k
     WHERE d.source = p_source AND d.status = 'active'
    UNION ALL
    SELECT coalesce(s->>'column', x->>'column')
      FROM ml._deployments d, jsonb_array_elements(d.plan->'inputs') i, jsonb_array_elements(i->'sources') s
      LEFT JOIN LATERAL jsonb_array_elements(CASE WHEN s ? 'expr' THEN s->'columns' ELSE '[]' END) x ON true
     WHERE d.source = p_source AND d.status = 'active') t
   WHERE c IS NOT NULL;
  SELECT string_agg(DISTINCT format('%I', c), ', ') INTO v_write FROM (
    SELECT o->>'column' AS c FROM ml._deployments d, jsonb_array_elements(d.plan->'outputs') o
     WHERE d.source = p_source AND d.status = 'active' AND jsonb_typeof(d.plan->'target') IS DISTINCT FROM 'object'
    UNION ALL
    SELECT p->>'column' FROM ml._deployments d,
           jsonb_each(CASE WHEN jsonb_typeof(d.plan->'provenance') = 'object' THEN d.plan->'provenance' ELSE '{}' END) e(k, p)
     WHERE d.source = p_source AND d.status = 'active') t;
  IF v_read IS NOT NULL THEN
    SELECT n.nspname INTO v_schema FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = p_source;
    -- Concurrent GRANTs on one schema fail with "tuple concurrently updated": take turns, and
    -- grant only once.
    PERFORM ml._lock_task('grants:' || v_schema);
    IF NOT has_schema_privilege('pgscore_worker', v_schema, 'USAGE') THEN
      EXECUTE format('GRANT USAGE ON SCHEMA %I TO pgscore_worker', v_schema);
    END IF;
    EXECUTE format('GRANT SELECT (tableoid, xmin, ctid, %s) ON %s TO pgscore_worker', v_read, v_rel);
    IF v_write IS NOT NULL THEN
      EXECUTE format('GRANT UPDATE (%s) ON %s TO pgscore_worker', v_write, v_rel);
    END IF;
  END IF;
END
$$;

-- Builds everything a deployment generates from its plan. Writers lock the table, then its
-- queue (in the trigger): take them in the same order, or a re-install and an INSERT deadlock.
CREATE OR REPLACE FUNCTION ml._install(p_id int, p_name text, p_source oid, p_plan jsonb)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  -- Re-installing drops the triggers first (ACCESS EXCLUSIVE): take that lock at once, in short
  -- tries, rather than SHARE ROW EXCLUSIVE and an upgrade that writers would queue behind.
  PERFORM ml._lock_tables(ARRAY(SELECT ml._trigger_tables(p_source)), 'ACCESS EXCLUSIVE', 'pgscore (installing its triggers)');
  PERFORM ml._install_queue_table(p_id, p_plan);
  PERFORM ml._install_enqueue_function(p_id, p_plan);
  PERFORM ml._install_capture_function(p_id, p_plan);
  PERFORM ml._install_triggers(p_id, p_name, p_source, p_plan);
END
$$;

-- Replaced by the functions above (plan version 2).
DROP FUNCTION IF EXISTS ml._install_queue(int, text, oid, jsonb);
