-- Capture from the WAL (deploy option "capture": "wal"). Such a deployment gets no triggers: the
-- application's writes run exactly as without pgscore. The worker (or the Kafka relay) reads the
-- changes of the deployed tables from the replication slot ml._capture_slot() through the
-- publication "pgscore" (logical replication, pgoutput), which carries only their key columns,
-- and queues the keys of each committed transaction in one call of ml._capture. From the queue
-- on, everything is as with the triggers (claim, newest-wins write-back, dead letters, runs).
-- The worker's own write-backs carry a logical message (prefix 'pgscore') and are skipped.
-- The slot's position advances only after the keys of the transactions before it are queued.

-- The replication slot of this database: slots belong to the cluster, so it is named by the
-- database's oid.
CREATE OR REPLACE FUNCTION ml._capture_slot()
RETURNS name
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT format('pgscore_%s', d.oid)::name FROM pg_database d WHERE d.datname = current_database()
$$;

-- Why a table cannot be captured from the WAL, or NULL. Checked at deploy and on every re-check
-- (ml._check_servable). A table in a publication that publishes updates must have a replica
-- identity, or every UPDATE of the application fails: pgscore refuses rather than break it.
CREATE OR REPLACE FUNCTION ml._capture_problem(p_source oid)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT CASE
    WHEN current_setting('wal_level') <> 'logical'
      THEN format('"capture": "wal" needs wal_level = logical (the server runs with %s)', current_setting('wal_level'))
    WHEN current_setting('server_version_num')::int < 150000
      THEN '"capture": "wal" needs PostgreSQL 15 or later (publication column lists)'
    WHEN EXISTS (SELECT 1 FROM ml._trigger_tables(p_source) r(rel) JOIN pg_class c ON c.oid = r.rel WHERE c.relreplident = 'n')
      THEN format('%s has REPLICA IDENTITY NOTHING: published, its UPDATEs would fail', ml._relname(p_source))
  END
$$;

-- The publication lists the tables of the active WAL-captured deployments: with their key
-- columns only when the replica identity is the primary key (the default), whole rows otherwise
-- (a column list must cover the replica identity, or the application's UPDATEs fail). It is
-- created once and never dropped: a slot that decodes WAL from before a publication existed
-- fails, so the publication outlives its last table. Runs with the installer's rights.
CREATE OR REPLACE FUNCTION ml._sync_publication()
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_tables text;
  v_table regclass;
BEGIN
  SELECT string_agg(CASE WHEN c.relreplident = 'd' THEN format('%s (%s)', ml._relname(s.source), s.cols)
                         ELSE ml._relname(s.source) END, ', ')
    INTO v_tables
    FROM (SELECT d.source, string_agg(DISTINCT format('%I', k->>'column'), ', ') AS cols
            FROM ml._deployments d, jsonb_array_elements(d.plan->'keys') k
           WHERE d.status = 'active' AND ml._captures_wal(d.plan)
           GROUP BY d.source) s
    JOIN pg_class c ON c.oid = s.source
   WHERE ml._capture_problem(s.source) IS NULL;
  IF NOT EXISTS (SELECT 1 FROM pg_publication p WHERE p.pubname = 'pgscore') THEN
    IF v_tables IS NULL THEN
      RETURN;
    END IF;
    CREATE PUBLICATION pgscore WITH (publish = 'insert, update', publish_via_partition_root = true);
  END IF;
  IF v_tables IS NOT NULL THEN
    EXECUTE format('ALTER PUBLICATION pgscore SET TABLE %s', v_tables);
  ELSE
    FOR v_table IN SELECT r.prrelid::regclass FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid
                    WHERE p.pubname = 'pgscore' LOOP
      EXECUTE format('ALTER PUBLICATION pgscore DROP TABLE %s', v_table);
    END LOOP;
  END IF;
END
$$;

-- Generates ml._capture_<id>(rows jsonb): queues the keys of the rows the worker read from the
-- WAL (a JSON array of objects of column texts: the key columns, or the whole row under REPLICA
-- IDENTITY FULL), as the insert trigger does: one queue row for up to 100 keys, key ranges or
-- slices of 100 beyond (ml._enqueue_ranges_sql), then wakes a sleeping worker.
CREATE OR REPLACE FUNCTION ml._install_capture_function(p_id int, p_plan jsonb)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_function text := format('_capture_%s', p_id);
  v_from text;
BEGIN
  IF NOT ml._captures_wal(p_plan) THEN
    EXECUTE format('DROP FUNCTION IF EXISTS ml.%I(jsonb)', v_function);
    RETURN;
  END IF;
  SELECT format('SELECT DISTINCT %s FROM jsonb_array_elements(p_rows) k ORDER BY %s',
                string_agg(format('(k->>%L)::%s', k.key->>'column', k.key->>'type'), ', ' ORDER BY k.i),
                string_agg(k.i::text, ', ' ORDER BY k.i))
    INTO v_from
    FROM jsonb_array_elements(p_plan->'keys') WITH ORDINALITY k(key, i);
  EXECUTE format($f$
    CREATE OR REPLACE FUNCTION ml.%1$I(p_rows jsonb) RETURNS bigint
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $body$
    DECLARE
      pgscore_rows bigint := (SELECT count(*) FROM (%6$s) f);
      pgscore_first bigint;
      pgscore_last bigint;
      %2$s
    BEGIN
      IF pgscore_rows = 0 THEN
        RETURN 0;
      ELSIF pgscore_rows <= 100 THEN
        INSERT INTO ml.%3$I (pgscore_n, %4$s) SELECT count(*), %5$s FROM (%6$s) f(%4$s);
      ELSE
        %7$s;
      END IF;
      PERFORM ml._wake_worker(%8$s);
      RETURN pgscore_rows;
    END
    $body$ $f$,
    v_function,
    (SELECT string_agg(format('pgscore_keys%s %s[];', k.i, k.key->>'type'), ' ' ORDER BY k.i)
       FROM jsonb_array_elements(p_plan->'keys') WITH ORDINALITY k(key, i)),
    format('_queue_%s', p_id),
    (SELECT string_agg(format('pgscore_k%s', i), ', ' ORDER BY i) FROM generate_series(1, jsonb_array_length(p_plan->'keys')) i),
    (SELECT string_agg(format('array_agg(pgscore_k%s)', i), ', ' ORDER BY i) FROM generate_series(1, jsonb_array_length(p_plan->'keys')) i),
    v_from,
    CASE WHEN ml._ranged(p_plan) THEN ml._enqueue_ranges_sql(p_id, p_plan, v_from)
         ELSE ml._enqueue_slices_sql(p_id, p_plan, v_from) END,
    p_id);
  EXECUTE format('REVOKE ALL ON FUNCTION ml.%I(jsonb) FROM PUBLIC', v_function);
END
$$;

-- The worker queues the rows of committed transactions it read from the WAL: p_rows maps table
-- oids to arrays of rows ({"16384": [{"id": "17"}, {"id": "18"}]}), queued for every active
-- WAL-captured deployment on that table now (one made since the rows were written gets them too;
-- its backfill read them anyway). Rows of other tables are dropped. Returns the keys queued.
CREATE OR REPLACE FUNCTION ml._capture(p_rows jsonb)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_id int;
  v_table text;
  v_n bigint := 0;
  v_queued bigint;
BEGIN
  IF NOT pg_has_role('pgscore_worker', 'MEMBER') THEN
    RAISE EXCEPTION 'only members of pgscore_worker queue captured rows' USING ERRCODE = 'insufficient_privilege';
  END IF;
  FOR v_id, v_table IN SELECT d.id, d.source::oid::text FROM ml._deployments d
                        WHERE d.source::oid::text IN (SELECT jsonb_object_keys(p_rows))
                          AND d.status = 'active' AND ml._captures_wal(d.plan)
                        ORDER BY d.id LOOP
    EXECUTE format('SELECT ml.%I($1)', format('_capture_%s', v_id)) INTO v_queued USING p_rows->v_table;
    v_n := v_n + v_queued;
  END LOOP;
  RETURN v_n;
END
$$;

-- The worker created the slot (again): changes before it were never decoded, so every active
-- WAL-captured deployment queues its whole table once, as a backfill run (ml.runs shows it).
CREATE OR REPLACE FUNCTION ml._capture_started()
RETURNS int
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_id int;
  v_n int := 0;
BEGIN
  IF NOT pg_has_role('pgscore_worker', 'MEMBER') THEN
    RAISE EXCEPTION 'only members of pgscore_worker start the capture' USING ERRCODE = 'insufficient_privilege';
  END IF;
  FOR v_id IN SELECT d.id FROM ml._deployments d WHERE d.status = 'active' AND ml._captures_wal(d.plan) ORDER BY d.id LOOP
    PERFORM ml._start_run(v_id, 'backfill');
    v_n := v_n + 1;
  END LOOP;
  RETURN v_n;
END
$$;

-- The WAL the slot keeps for the worker (one row of NULLs when there is no slot): how far behind it is, and whether the server still keeps
-- enough (wal_status 'lost' means max_slot_wal_keep_size removed WAL the slot needed: the worker
-- drops the slot, creates it again and backfills, see ml._capture_started).
CREATE OR REPLACE FUNCTION ml._capture_slot_state(
  OUT slot name, OUT active boolean, OUT retained_bytes bigint, OUT wal_status text, OUT safe_wal_bytes bigint)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT s.slot_name, s.active,
         (pg_current_wal_lsn() - coalesce(s.confirmed_flush_lsn, s.restart_lsn))::bigint,
         s.wal_status, s.safe_wal_size
    FROM pg_replication_slots s WHERE s.slot_name = ml._capture_slot()
$$;

-- Why the capture needs attention (the alert 'capture_lag', 075_alerts.sql), or NULL: the slot is
-- missing while deployments capture from the WAL (no worker created it yet, or it was dropped),
-- the server may soon remove WAL it needs (wal_status 'unreserved' or 'lost', from
-- max_slot_wal_keep_size), or it keeps more than 1 GB for a worker that is behind or stopped.
CREATE OR REPLACE FUNCTION ml._capture_lag()
RETURNS jsonb
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v record;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM ml._deployments d WHERE d.status = 'active' AND ml._captures_wal(d.plan)) THEN
    RETURN NULL;
  END IF;
  SELECT * INTO v FROM ml._capture_slot_state();
  IF v.slot IS NULL THEN
    RETURN jsonb_build_object('slot', ml._capture_slot(), 'problem', 'no replication slot: is a worker (or the Kafka relay) running?');
  ELSIF v.wal_status IN ('unreserved', 'lost') OR v.retained_bytes > 1024 * 1024 * 1024 THEN
    RETURN jsonb_build_object('slot', v.slot, 'active', v.active, 'retained_bytes', v.retained_bytes,
                              'wal_status', v.wal_status, 'safe_wal_bytes', v.safe_wal_bytes);
  END IF;
  RETURN NULL;
END
$$;
