-- The status page the workers serve beside /metrics (src/metrics/status-page.ts): everything it
-- shows but live quality, in one document read once per refresh. The worker role may not read
-- ml._drift_counts nor run ml._latency_quantile, hence SECURITY DEFINER.

-- {"at", "deployments": [{deployment, source, model (as deployed), model_version (name@version
-- in use), state, reason, mode, variants [{model, weight, share}] | null, shadow | null, pending,
-- oldest_pending_seconds, scored_last_minute, latency_p50_ms, latency_p99_ms, dead_letters,
-- last_scored_at, in_kafka, versions_in_use, alerts [raised alerts], minutes [the last 60 whole
-- minutes and the current one: {minute, scored, dead, p50_ms, p99_ms}], drift [per version and
-- feature over the last hour, as ml.drift: {model, kind, feature, rows, psi, null_share,
-- out_of_range_share, threshold, drifted, baseline: the version's summary (edges or categories,
-- freqs), live: the shares of the same buckets}]}]}. ml._batches keeps an hour, so a minute
-- without batches is a minute in which nothing was scored (p50_ms and p99_ms NULL).
CREATE OR REPLACE FUNCTION ml._status_page()
RETURNS jsonb
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
  WITH minutes AS (
    SELECT m FROM generate_series(date_trunc('minute', now()) - interval '60 minutes', date_trunc('minute', now()), interval '1 minute') m
  ), batches AS (
    SELECT b.deployment_id, date_trunc('minute', b.finished_at) AS m, sum(b.scored)::bigint AS scored, sum(b.dead)::bigint AS dead
      FROM ml._batches b WHERE b.finished_at >= date_trunc('minute', now()) - interval '60 minutes'
     GROUP BY 1, 2
  ), hist AS (
    SELECT t.deployment_id, t.m, array_agg(t.h ORDER BY t.i) AS hist
      FROM (SELECT b.deployment_id, date_trunc('minute', b.finished_at) AS m, u.i, sum(u.h)::bigint AS h
              FROM ml._batches b, unnest(b.latency_hist) WITH ORDINALITY u(h, i)
             WHERE b.finished_at >= date_trunc('minute', now()) - interval '60 minutes'
             GROUP BY 1, 2, 3) t
     GROUP BY 1, 2
  ), series AS (
    SELECT d.id AS deployment_id,
           jsonb_agg(jsonb_build_object('minute', m.m, 'scored', coalesce(b.scored, 0), 'dead', coalesce(b.dead, 0),
                                        'p50_ms', ml._latency_quantile(h.hist, 0.5), 'p99_ms', ml._latency_quantile(h.hist, 0.99))
                     ORDER BY m.m) AS minutes
      FROM ml._deployments d
      CROSS JOIN minutes m
      LEFT JOIN batches b ON b.deployment_id = d.id AND b.m = m.m
      LEFT JOIN hist h ON h.deployment_id = d.id AND h.m = m.m
     GROUP BY d.id
  ), live AS (
    -- The same window as ml._drift's '1 hour' (now() is the transaction's, in both).
    SELECT t.deployment_id, t.model, t.kind, t.feature, array_agg(t.c ORDER BY t.i) AS counts
      FROM (SELECT c.deployment_id, c.model, c.kind, c.feature, u.i, sum(u.v)::float8 AS c
              FROM ml._drift_counts c, unnest(c.counts) WITH ORDINALITY u(v, i)
             WHERE c.minute >= now() - interval '1 hour'
             GROUP BY 1, 2, 3, 4, 5) t
     GROUP BY 1, 2, 3, 4
  ), drift AS (
    SELECT x.deployment,
           jsonb_agg(jsonb_build_object(
             'model', x.model, 'kind', x.kind, 'feature', x.feature, 'rows', x.rows, 'psi', x.psi,
             'null_share', x.null_share, 'out_of_range_share', x.out_of_range_share, 'threshold', x.threshold, 'drifted', x.drifted,
             'baseline', CASE x.kind WHEN 'input' THEN b.inputs ELSE b.outputs END -> x.feature,
             'live', (SELECT jsonb_agg(coalesce(c / nullif(s.total, 0), 0) ORDER BY i)
                        FROM unnest(l.counts) WITH ORDINALITY u(c, i),
                             (SELECT sum(v) AS total FROM unnest(l.counts) v) s))
             ORDER BY x.model, x.kind DESC, x.feature) AS features
      FROM ml._drift(ARRAY['1 hour']) x
      JOIN ml._deployments d ON d.name = x.deployment
      JOIN live l ON l.deployment_id = d.id AND l.model = x.model AND l.kind = x.kind AND l.feature = x.feature
      JOIN ml._baselines b ON b.model || '@' || b.version = x.model
     GROUP BY x.deployment
  ), alerts AS (
    SELECT a.deployment_id, jsonb_agg(a.alert ORDER BY a.alert) AS alerts FROM ml._alert_state a WHERE a.raised GROUP BY 1
  )
  SELECT jsonb_build_object('at', now(), 'deployments', coalesce(jsonb_agg(jsonb_build_object(
           'deployment', d.name,
           'source', coalesce(ml._relname(d.source), d.source_name),
           'model', d.model || coalesce('@' || d.version, CASE WHEN d.alias <> 'production' THEN '@' || d.alias ELSE '' END),
           'model_version', s.model,
           'state', d.status,
           'reason', d.reason,
           'mode', coalesce(d.options->>'mode', 'live'),
           'variants', (SELECT jsonb_agg(jsonb_build_object('model', v.ref, 'weight', v.weight, 'share', v.weight / nullif(v.total, 0))
                                         ORDER BY v.ref)
                          FROM (SELECT e->>'ref' AS ref, (e->>'weight')::float8 AS weight, sum((e->>'weight')::float8) OVER () AS total
                                  FROM jsonb_array_elements(CASE jsonb_typeof(d.plan->'variants') WHEN 'array' THEN d.plan->'variants' END) e) v),
           'shadow', CASE jsonb_typeof(d.plan->'shadow') WHEN 'object' THEN d.plan->'shadow'->>'ref' END,
           'pending', s.pending,
           'oldest_pending_seconds', extract(epoch FROM s.oldest_pending_age)::float8,
           'scored_last_minute', s.scored_last_minute,
           'latency_p50_ms', s.latency_p50_ms,
           'latency_p99_ms', s.latency_p99_ms,
           'dead_letters', s.dead_letters,
           'last_scored_at', s.last_scored_at,
           'in_kafka', s.in_kafka,
           'versions_in_use', to_jsonb(s.versions_in_use),
           'alerts', coalesce(a.alerts, '[]'),
           'minutes', coalesce(se.minutes, '[]'),
           'drift', coalesce(dr.features, '[]'))
         ORDER BY d.name), '[]'))
    FROM ml._deployments d
    JOIN ml._status() s ON s.deployment = d.name
    LEFT JOIN series se ON se.deployment_id = d.id
    LEFT JOIN drift dr ON dr.deployment = d.name
    LEFT JOIN alerts a ON a.deployment_id = d.id
   -- The workers serve every deployment; an admin who asks sees the tables it may read (005).
   WHERE ml._may_read(ml._reader(), d.source)
$$;

-- 090_privileges.sql runs after this file and revokes only PUBLIC's EXECUTE: these stay.
GRANT EXECUTE ON FUNCTION ml._status_page() TO pgscore_worker, pgscore_admin;
