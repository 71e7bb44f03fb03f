-- Queue operations (backfill, retry) and what operators watch (ml.errors, ml.status).

CREATE OR REPLACE FUNCTION ml._active_deployment(p_name text)
RETURNS ml._deployments
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  d ml._deployments;
BEGIN
  SELECT * INTO d FROM ml._deployments WHERE name = p_name;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'deployment "%" does not exist', p_name USING ERRCODE = 'no_data_found';
  END IF;
  IF d.status <> 'active' THEN
    RAISE EXCEPTION 'deployment "%" is % (%)', p_name, d.status, coalesce(d.reason, 'waiting for a worker to read the model signature')
      USING ERRCODE = 'object_not_in_prerequisite_state';
  END IF;
  RETURN d;
END
$$;

-- Queues the keys p_from selects (see ml._enqueue_sql), wakes a sleeping worker, returns how many.
CREATE OR REPLACE FUNCTION ml._enqueue(d ml._deployments, p_from text, p_priority int)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_count bigint;
BEGIN
  EXECUTE format('WITH queued AS (%s RETURNING pgscore_n) SELECT coalesce(sum(pgscore_n), 0) FROM queued',
                 ml._enqueue_sql(d.id, d.plan, p_from, p_priority))
    INTO v_count;
  IF v_count > 0 THEN
    PERFORM pg_notify('pgscore_wake', d.id::text);
  END IF;
  RETURN v_count;
END
$$;

-- Queues a deployment's dead letters again, once their cause is fixed. They stay in ml.errors
-- until they score: a row that fails again comes back with one more attempt.
CREATE OR REPLACE FUNCTION ml.retry(deployment text)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  d ml._deployments := ml._active_deployment(deployment);
  v_keys text;
BEGIN
  PERFORM ml._require_owner(d.source, format('retry "%s"', d.name));
  SELECT string_agg(format('(e.row_key->>%L)::%s AS %I', k->>'column', k->>'type', k->>'column'), ', ')
    INTO v_keys
    FROM jsonb_array_elements(d.plan->'keys') k;
  RETURN ml._enqueue(d, format('SELECT %s FROM ml._dead_letters e WHERE e.deployment_id = %s', v_keys, d.id), 0);
END
$$;

-- Dead letters of each deployment, and Kafka messages no worker could decode (deployment NULL).
-- A reader sees the dead letters of the tables it may read (005_visibility.sql); undecodable
-- messages belong to no known table: superusers and workers see them.
CREATE OR REPLACE VIEW ml.errors AS
SELECT d.name AS deployment, e.row_key, e.reason, e.attempts, e.first_seen, e.last_seen
  FROM ml._dead_letters e JOIN ml._deployments d ON d.id = e.deployment_id
 WHERE ml._may_read(current_user, d.source)
UNION ALL
SELECT NULL, jsonb_build_object('topic', p.topic, 'partition', p."partition", 'offset', p."offset", 'key', p.message_key),
       p.reason, 1, p.seen_at, p.seen_at
  FROM ml._poison_messages p
 WHERE ml._may_read(current_user, NULL);

-- Latency histograms: bucket 1 holds latencies under 1 ms, bucket b > 1 holds
-- [2^((b-2)/4), 2^((b-1)/4)) ms, the last bucket everything above. Quarter-octave buckets keep
-- reported quantiles within 10 % of the truth. The worker fills them (src/worker/latency.ts).
CREATE OR REPLACE FUNCTION ml._latency_quantile(p_hist bigint[], p_q float8)
RETURNS float8
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_total bigint := 0;
  v_seen bigint := 0;
  v_i int;
BEGIN
  SELECT coalesce(sum(h), 0) INTO v_total FROM unnest(p_hist) h;
  IF v_total = 0 THEN
    RETURN NULL;
  END IF;
  FOR v_i IN 1 .. cardinality(p_hist) LOOP
    v_seen := v_seen + p_hist[v_i];
    IF v_seen >= p_q * v_total THEN
      RETURN CASE WHEN v_i = 1 THEN 0.5 ELSE round(power(2, (v_i - 1.5) / 4.0)::numeric, 2)::float8 END;
    END IF;
  END LOOP;
  RETURN NULL;
END
$$;

-- The columns of ml.status change between versions: drop and create instead of replacing.
DROP VIEW IF EXISTS ml.status;
DROP FUNCTION IF EXISTS ml._status();
CREATE FUNCTION ml._status()
RETURNS TABLE (
  deployment text,
  model text,
  state text,
  pending bigint,
  oldest_pending_age interval,
  scored_last_minute bigint,
  latency_p50_ms float8,
  latency_p99_ms float8,
  dead_letters bigint,
  last_scored_at timestamptz,
  in_kafka bigint,
  versions_in_use text[],
  capture text,
  capture_lag_bytes bigint)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
  d ml._deployments;
  v_hist bigint[];
  v_slot record;
BEGIN
  SELECT * INTO v_slot FROM ml._capture_slot_state();
  FOR d IN SELECT * FROM ml._deployments ORDER BY name LOOP
    deployment := d.name;
    model := format('%s@%s', d.model, ml._resolve_version(d.model, d.version, d.alias));
    state := d.status;
    pending := NULL;
    oldest_pending_age := NULL;
    IF to_regclass(format('ml.%I', format('_queue_%s', d.id))) IS NOT NULL THEN
      EXECUTE format('SELECT coalesce(sum(pgscore_n), 0), statement_timestamp() - min(pgscore_queued_at) FROM ml.%I', format('_queue_%s', d.id))
         INTO pending, oldest_pending_age;
    END IF;
    SELECT coalesce(sum(b.scored), 0) INTO scored_last_minute
      FROM ml._batches b WHERE b.deployment_id = d.id AND b.finished_at > now() - interval '1 minute';
    SELECT array_agg(s ORDER BY i) INTO v_hist FROM (
      SELECT u.i, sum(u.h)::bigint AS s
        FROM ml._batches b, unnest(b.latency_hist) WITH ORDINALITY u(h, i)
       WHERE b.deployment_id = d.id AND b.finished_at > now() - interval '1 minute'
       GROUP BY u.i) t;
    latency_p50_ms := ml._latency_quantile(v_hist, 0.5);
    latency_p99_ms := ml._latency_quantile(v_hist, 0.99);
    SELECT count(*) INTO dead_letters FROM ml._dead_letters e WHERE e.deployment_id = d.id;
    SELECT max(b.finished_at) INTO last_scored_at FROM ml._batches b WHERE b.deployment_id = d.id;
    -- The real lag: rows of the messages at or past the group's committed offset of their partition
    -- (a redelivered or duplicated message is counted once, where it is in the log). NULL for a
    -- deployment the relay never served (the notify transport).
    in_kafka := NULL;
    IF EXISTS (SELECT 1 FROM ml._kafka_counts k WHERE k.deployment_id = d.id) THEN
      SELECT coalesce(sum(m.rows), 0) INTO in_kafka
        FROM ml._kafka_messages m
        LEFT JOIN ml._kafka_committed c ON c.topic = m.topic AND c."partition" = m."partition"
       WHERE m.deployment_id = d.id AND m."offset" >= coalesce(c."offset", 0);
    END IF;
    -- The versions that wrote predictions in the last hour, most rows first, e.g. {churn@4,churn@3}.
    SELECT coalesce(array_agg(v.model ORDER BY v.rows DESC, v.model), '{}') INTO versions_in_use FROM (
      SELECT b.model, sum(b.scored) AS rows FROM ml._batches b
       WHERE b.deployment_id = d.id AND b.model IS NOT NULL AND b.scored > 0 GROUP BY b.model) v;
    -- 'wal': the WAL the replication slot keeps, not read yet (rows written and not queued yet are in it).
    capture := CASE WHEN ml._captures_wal(d.plan) THEN 'wal' ELSE 'trigger' END;
    capture_lag_bytes := CASE WHEN capture = 'wal' THEN v_slot.retained_bytes END;
    RETURN NEXT;
  END LOOP;
END
$$;

CREATE VIEW ml.status AS SELECT * FROM ml._status();
