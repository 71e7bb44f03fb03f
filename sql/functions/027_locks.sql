-- pgscore's locks, on ml objects only pgscore's roles can lock (sql/migrations/0011_locks.sql).
-- Advisory locks were used before: any connected role could take them, and holding one
-- silenced alerts, delayed schedules or made the worker poll hot.

-- Leader election and serialisation: locks the task's row of ml._leaders for the rest of the
-- transaction. p_wait false: returns false at once when another transaction holds it (the
-- other worker does the task). Tasks other than the fixed ones ('maintain', 'alerts',
-- 'schedule') get their row on first use, e.g. 'model:<name>', 'grants:<schema>'.
CREATE OR REPLACE FUNCTION ml._lock_task(p_task text, p_wait boolean DEFAULT true)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF p_wait THEN
    -- A concurrent first insert of the same task waits for the other transaction: that is the lock.
    INSERT INTO ml._leaders (task) VALUES (p_task) ON CONFLICT (task) DO NOTHING;
    PERFORM 1 FROM ml._leaders l WHERE l.task = p_task FOR UPDATE;
    RETURN true;
  END IF;
  PERFORM 1 FROM ml._leaders l WHERE l.task = p_task FOR UPDATE SKIP LOCKED;
  RETURN FOUND;
END
$$;

-- The wake-up, called by every deployment's trigger (sql/functions/030_generate.sql) after it
-- queued rows. A worker that ran out of work holds ml._wake in SHARE mode while it sleeps.
--  - Busy worker (no SHARE holder): the writer takes ROW EXCLUSIVE on ml._wake until it commits
--    (a fast-path lock: no shared lock-table traffic) and sends nothing. The worker looks at
--    the queues again once it gets its SHARE lock, which waits for every such writer to commit.
--  - Sleeping worker: the lock is not available, and the writer wakes it with NOTIFY, naming
--    the deployment whose queue has work (the worker visits only those, see src/worker/loop.ts).
-- NOTIFY's commit-time lock would serialise concurrent writers; this keeps it off the busy path.
-- Only pgscore's roles can lock ml._wake: an application has no rights on ml, and an admin may
-- take only ACCESS SHARE, which conflicts with neither mode.
-- Not SECURITY DEFINER: it runs inside the SECURITY DEFINER trigger, as the owner.
CREATE OR REPLACE FUNCTION ml._wake_worker(p_deployment int)
RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
  LOCK TABLE ml._wake IN ROW EXCLUSIVE MODE NOWAIT;
EXCEPTION WHEN lock_not_available THEN
  PERFORM pg_catalog.pg_notify('pgscore_wake', p_deployment::text);
END
$$;

-- Per deployment, the last number its queue handed out (the identity sequence of
-- ml._queue_<id>.pgscore_seq; NULL before the first row). A worker that compares these with what
-- it saw last knows which queues got rows since, without reading any queue: one statement for
-- all deployments, about 11 µs each (the sequence found by name: a catalog scan of pg_class and
-- pg_depend cost three times that with 1,000 deployments).
CREATE OR REPLACE FUNCTION ml._queue_heads()
RETURNS TABLE (deployment_id int, head bigint)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT d.id, pg_sequence_last_value(s.seq)
    FROM ml._deployments d
    CROSS JOIN LATERAL (
      SELECT coalesce(to_regclass(format('ml.%I', format('_queue_%s_pgscore_seq_seq', d.id))),
                      CASE WHEN to_regclass(format('ml.%I', format('_queue_%s', d.id))) IS NOT NULL
                           THEN pg_get_serial_sequence(format('ml.%I', format('_queue_%s', d.id)), 'pgscore_seq')::regclass END) AS seq) s
   WHERE s.seq IS NOT NULL
$$;

-- The worker's slow safety poll: the deployments among p_ids whose queue holds a row that is due.
CREATE OR REPLACE FUNCTION ml._queues_with_work(p_ids int[])
RETURNS SETOF int
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_id int;
  v_due boolean;
BEGIN
  FOREACH v_id IN ARRAY p_ids LOOP
    CONTINUE WHEN to_regclass(format('ml.%I', '_queue_' || v_id)) IS NULL;
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM ml.%I WHERE pgscore_not_before IS NULL OR pgscore_not_before <= now())',
                   '_queue_' || v_id) INTO v_due;
    IF v_due THEN
      RETURN NEXT v_id;
    END IF;
  END LOOP;
END
$$;

REVOKE ALL ON FUNCTION ml._lock_task(text, boolean), ml._wake_worker(int), ml._queue_heads(), ml._queues_with_work(int[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ml._queue_heads(), ml._queues_with_work(int[]) TO pgscore_worker;
-- The worker sleeps holding ml._wake in SHARE mode (LOCK ... IN SHARE MODE needs UPDATE).
GRANT UPDATE ON ml._wake TO pgscore_worker;
