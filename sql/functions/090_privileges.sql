-- Least privilege (README "Security"), re-applied on every migrate. Applications get nothing:
-- their writes are queued by SECURITY DEFINER triggers. Nothing private is executable by PUBLIC.
REVOKE ALL ON SCHEMA ml FROM PUBLIC;
GRANT USAGE ON SCHEMA ml TO pgscore_admin, pgscore_worker;
-- Trigger functions created later by ml.deploy revoke PUBLIC's EXECUTE themselves
-- (ml._install_enqueue_function): per-schema default privileges cannot take it away.
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA ml FROM PUBLIC;

-- Admins: the SQL surface, and read access to everything in ml.
GRANT EXECUTE ON FUNCTION
  ml.register_model(text, bytea, jsonb),
  ml.promote(text, int, text),
  ml.rollback(text, text),
  ml.deploy(text, regclass, text, jsonb, jsonb, jsonb),
  ml.undeploy(text),
  ml.backfill(text, text),
  ml.retry(text),
  ml._record_signature(text, int, jsonb, text)
  TO pgscore_admin;
GRANT EXECUTE ON FUNCTION ml.remove_model(text, int), ml._append_model_part(text, int, bytea, text) TO pgscore_admin;
GRANT SELECT ON ml._model_parts TO pgscore_worker;
GRANT EXECUTE ON FUNCTION ml._model_size(text, int, bytea) TO pgscore_admin, pgscore_worker;
GRANT SELECT ON ALL TABLES IN SCHEMA ml TO pgscore_admin;

-- Functions the views call run with the reader's rights; ml._status is SECURITY DEFINER.
GRANT EXECUTE ON FUNCTION ml._status(), ml._resolve_version(text, int, text), ml._relname(oid)
  TO pgscore_admin, pgscore_worker;
GRANT SELECT ON ml.models, ml.deployments, ml.status, ml.errors TO pgscore_admin, pgscore_worker;

-- The worker: reads models and deployments, records signatures and schema changes it finds,
-- writes dead letters and statistics. Its rights on queues and source tables are granted per
-- deployment (ml._install_queue_table, ml._grant_worker).
GRANT SELECT ON ml._models, ml._aliases, ml._deployments, ml._migrations TO pgscore_worker;
GRANT EXECUTE ON FUNCTION ml._record_signature(text, int, jsonb, text), ml._recheck(int, text, int), ml._recheck_deployments(),
  ml._recheck_deployments(int, int) TO pgscore_worker;
GRANT SELECT, INSERT, UPDATE, DELETE ON ml._dead_letters TO pgscore_worker;
GRANT EXECUTE ON FUNCTION ml._invalidate_unwritable(int, text) TO pgscore_worker;
GRANT EXECUTE ON FUNCTION ml._capture(jsonb), ml._capture_started(), ml._capture_slot(), ml._capture_slot_state() TO pgscore_worker;
GRANT EXECUTE ON FUNCTION ml._capture_slot_state() TO pgscore_admin;
GRANT SELECT, INSERT, DELETE ON ml._batches TO pgscore_worker;
GRANT INSERT ON ml._poison_messages TO pgscore_worker;
GRANT SELECT, INSERT, UPDATE ON ml._kafka_counts TO pgscore_worker;
GRANT SELECT, INSERT, UPDATE, DELETE ON ml._kafka_messages, ml._kafka_committed TO pgscore_worker;

-- The model lifecycle (sql/functions/025, 037, 055, 060).
GRANT EXECUTE ON FUNCTION
  ml.split(text, jsonb),
  ml.promote_shadow(text),
  ml.run_now(text),
  ml.configure(text, text),
  ml.compare(interval)
  TO pgscore_admin;
GRANT EXECUTE ON FUNCTION ml._runs() TO pgscore_admin, pgscore_worker;
GRANT SELECT ON ml.runs, ml.compare, ml.settings TO pgscore_admin;
GRANT EXECUTE ON FUNCTION ml._setting_defaults(), ml._setting(text) TO pgscore_admin;
GRANT SELECT ON ml.runs TO pgscore_worker;
GRANT EXECUTE ON FUNCTION ml._maintain(), ml._start_scheduled_run(int, timestamptz) TO pgscore_worker;
GRANT SELECT ON ml._runs TO pgscore_worker;
GRANT INSERT ON ml._prediction_batches TO pgscore_worker;
GRANT EXECUTE ON FUNCTION ml._finish_runs() TO pgscore_worker;

-- Monitoring (sql/functions/065_drift.sql). ml.set_baseline runs its query with the caller's
-- rights, so the admin calls its helpers itself.
GRANT EXECUTE ON FUNCTION
  ml.set_baseline(text, text),
  ml._parse_ref(text, text),
  ml._signature(text, int),
  ml._model_features(jsonb),
  ml._store_baseline(text, int, text, bigint, jsonb, jsonb),
  ml._drift(text[])
  TO pgscore_admin;
GRANT SELECT ON ml.drift TO pgscore_admin;
GRANT SELECT ON ml._baselines TO pgscore_worker;
GRANT EXECUTE ON FUNCTION
  ml._store_baseline(text, int, text, bigint, jsonb, jsonb),
  ml._add_drift_counts(int[], text[], text[], text[], timestamptz[], text[], bigint[], bigint[], bigint[])
  TO pgscore_worker;
GRANT EXECUTE ON FUNCTION ml._setting(text), ml._setting_defaults() TO pgscore_worker;
GRANT EXECUTE ON FUNCTION ml._performance(text[]) TO pgscore_admin;
GRANT SELECT ON ml.performance TO pgscore_admin;
GRANT EXECUTE ON FUNCTION ml._check_alerts(boolean) TO pgscore_worker;
GRANT SELECT ON ml.alerts TO pgscore_admin;
-- The workers' metrics show drift and live quality.
GRANT EXECUTE ON FUNCTION ml._drift(text[]), ml._performance(text[]) TO pgscore_worker;
GRANT SELECT ON ml.drift, ml.performance TO pgscore_worker;

-- What a deployment logged is shown only to roles that may read its table (005_visibility.sql):
-- row security on the tables admins may SELECT, a filter in the views and SECURITY DEFINER
-- functions built on them. The owner of ml (who runs these functions) is not restricted; the
-- workers' rows pass the same check. Writes come from the workers (the log) or from functions.
-- Policies and views call the checks as the reader: it needs EXECUTE on them (they say no more
-- than has_table_privilege does).
GRANT EXECUTE ON FUNCTION ml._may_read(name, oid), ml._may_read_deployment(name, int), ml._may_read_deployment_named(name, text),
  ml._may_read_model(name, text), ml._reader()
  TO pgscore_admin, pgscore_worker;
ALTER TABLE ml._prediction_batches ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS readers ON ml._prediction_batches;
CREATE POLICY readers ON ml._prediction_batches FOR SELECT USING (ml._may_read_deployment(current_user, deployment_id));
DROP POLICY IF EXISTS workers_append ON ml._prediction_batches;
CREATE POLICY workers_append ON ml._prediction_batches FOR INSERT TO pgscore_worker WITH CHECK (true);
ALTER TABLE ml._drift_counts ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS readers ON ml._drift_counts;
CREATE POLICY readers ON ml._drift_counts FOR SELECT USING (ml._may_read_deployment(current_user, deployment_id));
ALTER TABLE ml._runs ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS readers ON ml._runs;
CREATE POLICY readers ON ml._runs FOR SELECT USING (ml._may_read_deployment(current_user, deployment_id));
ALTER TABLE ml._baselines ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS readers ON ml._baselines;
CREATE POLICY readers ON ml._baselines FOR SELECT USING (ml._may_read_model(current_user, model));
-- The workers read, add, update and clear dead letters in their write-back.
ALTER TABLE ml._dead_letters ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS readers ON ml._dead_letters;
CREATE POLICY readers ON ml._dead_letters FOR SELECT USING (ml._may_read_deployment(current_user, deployment_id));
DROP POLICY IF EXISTS workers ON ml._dead_letters;
CREATE POLICY workers ON ml._dead_letters FOR ALL TO pgscore_worker USING (true) WITH CHECK (true);
-- Row security of a partitioned table applies to queries of the table, not of its partitions;
-- a queue holds a table's keys, an undecodable Kafka message a row's key. Admins read none of
-- them directly (ml.errors shows the messages to superusers and workers).
REVOKE SELECT ON ml._poison_messages FROM pgscore_admin;
DO $$
DECLARE
  v_table regclass;
BEGIN
  FOR v_table IN
    SELECT c.oid::regclass FROM pg_class c
     WHERE c.relnamespace = 'ml'::regnamespace AND c.relkind = 'r'
       AND (c.relname ~ '^_queue_\d+$' OR c.oid IN (SELECT i.inhrelid FROM pg_inherits i WHERE i.inhparent = 'ml._prediction_batches'::regclass))
  LOOP
    EXECUTE format('REVOKE SELECT ON %s FROM pgscore_admin', v_table);
  END LOOP;
END
$$;
