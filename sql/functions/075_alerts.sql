-- Alerts: when a deployment turns invalid (or its table is dropped), starts drifting (a feature
-- above its PSI threshold over the last hour), degrades (live quality worse than validation
-- over the last day) or gets new dead letters, and when that ends, pgscore sends
--   NOTIFY pgscore_alerts, '{"id": …, "deployment": …, "alert": "invalid" | "drifted" | "degraded" |
--     "dead_letters" | "capture_lag", "state": "raised" | "cleared", "detail": {…}, "at": …}'
-- once per change. The workers call ml._check_alerts every few seconds and log each change.
-- Any role may NOTIFY on any channel: "id" names the change's row of ml.alert_events, which only
-- pgscore writes, so a listener that reads it back (SELECT ... WHERE id = …) and finds the same
-- deployment, alert and state knows the alert is pgscore's.

-- p_quality: also re-evaluate "degraded" (ml.performance joins a day of the prediction log to the
-- labels, so the workers ask for it once a minute, not on every check); otherwise it stays as it was.
DROP FUNCTION IF EXISTS ml._check_alerts();
CREATE OR REPLACE FUNCTION ml._check_alerts(p_quality boolean DEFAULT true)
RETURNS TABLE (deployment text, alert text, state text, detail jsonb)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
  d ml._deployments;
  v_drifted jsonb;
  v_degraded jsonb;
  v_condition record;
  v_old ml._alert_state;
  v_dead bigint;
  v_event bigint;
  v_lag jsonb;
BEGIN
  -- One checker at a time: the others find the changes sent already.
  IF NOT ml._lock_task('alerts', false) THEN
    RETURN;
  END IF;
  SELECT coalesce(jsonb_object_agg(x.deployment, x.features), '{}') INTO v_drifted FROM (
    SELECT f.deployment, jsonb_agg(DISTINCT f.feature) AS features FROM ml._drift(ARRAY['1 hour']) f
     WHERE f.drifted GROUP BY f.deployment) x;
  IF p_quality THEN
  SELECT coalesce(jsonb_object_agg(x.deployment, x.models), '{}') INTO v_degraded FROM (
    SELECT p.deployment, jsonb_agg(DISTINCT p.model) AS models FROM ml._performance(ARRAY['1 day']) p
     WHERE p.degraded GROUP BY p.deployment) x;
  END IF;

  v_lag := ml._capture_lag();
  FOR d IN SELECT * FROM ml._deployments ORDER BY id LOOP
    SELECT count(*) INTO v_dead FROM ml._dead_letters e WHERE e.deployment_id = d.id;
    FOR v_condition IN
      SELECT * FROM (VALUES
        ('invalid', d.status IN ('invalid', 'dropped'), jsonb_build_object('status', d.status, 'reason', d.reason)),
        ('drifted', v_drifted ? d.name, jsonb_build_object('features', v_drifted->d.name)),
        ('capture_lag', d.status = 'active' AND ml._captures_wal(d.plan) AND v_lag IS NOT NULL, v_lag),
        ('degraded', CASE WHEN p_quality THEN v_degraded ? d.name
                          ELSE coalesce((SELECT s.raised FROM ml._alert_state s WHERE s.deployment_id = d.id AND s.alert = 'degraded'), false) END,
         CASE WHEN p_quality THEN jsonb_build_object('models', v_degraded->d.name)
              ELSE (SELECT s.detail FROM ml._alert_state s WHERE s.deployment_id = d.id AND s.alert = 'degraded') END),
        -- Raised when dead letters were added since the last check, cleared once there are none.
        ('dead_letters', v_dead > coalesce((SELECT s.seen FROM ml._alert_state s WHERE s.deployment_id = d.id AND s.alert = 'dead_letters'), 0)
                         OR (v_dead > 0 AND coalesce((SELECT s.raised FROM ml._alert_state s WHERE s.deployment_id = d.id AND s.alert = 'dead_letters'), false)),
         jsonb_build_object('dead_letters', v_dead))
      ) c(alert, raised, detail)
    LOOP
      SELECT * INTO v_old FROM ml._alert_state s WHERE s.deployment_id = d.id AND s.alert = v_condition.alert;
      IF v_condition.alert = 'dead_letters' THEN
        INSERT INTO ml._alert_state AS s (deployment_id, alert, raised, seen, detail)
        VALUES (d.id, 'dead_letters', coalesce(v_old.raised, false), v_dead, v_condition.detail)
        ON CONFLICT (deployment_id, alert) DO UPDATE SET seen = excluded.seen;
      END IF;
      CONTINUE WHEN v_condition.raised = coalesce(v_old.raised, false);
      INSERT INTO ml._alert_state AS s (deployment_id, alert, raised, seen, detail)
      VALUES (d.id, v_condition.alert, v_condition.raised, v_dead, v_condition.detail)
      ON CONFLICT (deployment_id, alert) DO UPDATE
        SET raised = excluded.raised, detail = excluded.detail, changed_at = now();
      deployment := d.name;
      alert := v_condition.alert;
      state := CASE WHEN v_condition.raised THEN 'raised' ELSE 'cleared' END;
      detail := v_condition.detail;
      -- The event's row first: a listener verifies a payload by reading its id back.
      INSERT INTO ml._alert_events (deployment_id, deployment, alert, state, detail)
      VALUES (d.id, deployment, alert, state, detail) RETURNING id INTO v_event;
      PERFORM pg_notify('pgscore_alerts', jsonb_build_object('id', v_event, 'deployment', deployment, 'alert', alert,
                                                             'state', state, 'detail', detail, 'at', now())::text);
      RETURN NEXT;
    END LOOP;
  END LOOP;
END
$$;

-- The alerts raised now; id is the event that raised each (ml.alert_events).
DROP VIEW IF EXISTS ml.alerts;
CREATE VIEW ml.alerts AS
SELECT d.name AS deployment, s.alert, s.detail, s.changed_at AS raised_at,
       (SELECT max(e.id) FROM ml._alert_events e
         WHERE e.deployment_id = s.deployment_id AND e.alert = s.alert AND e.state = 'raised') AS id
  FROM ml._alert_state s JOIN ml._deployments d ON d.id = s.deployment_id
 WHERE s.raised;

-- Every alert change pgscore sent on pgscore_alerts, by id (kept 30 days, see ml._maintain).
DROP VIEW IF EXISTS ml.alert_events;
CREATE VIEW ml.alert_events AS
SELECT e.id, e.deployment, e.alert, e.state, e.detail, e.at FROM ml._alert_events e;
GRANT SELECT ON ml.alert_events TO pgscore_admin;
