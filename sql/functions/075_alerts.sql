-- Alerts: when a deployment turns invalid (or its table is dropped), starts drifting (a feature
-- above its PSI threshold over the last hour), degrades (live quality worse than validation
-- over the last day) or gets new dead letters, and when that ends, pgscore sends
--   NOTIFY pgscore_alerts, '{"deployment": …, "alert": "invalid" | "drifted" | "degraded" |
--     "dead_letters", "state": "raised" | "cleared", "detail": {…}, "at": …}'
-- once per change. The workers call ml._check_alerts every few seconds and log each change.

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
BEGIN
  -- One checker at a time: the others find the changes sent already.
  IF NOT pg_try_advisory_xact_lock(1885827939, 4) THEN
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

  FOR d IN SELECT * FROM ml._deployments ORDER BY id LOOP
    SELECT count(*) INTO v_dead FROM ml._dead_letters e WHERE e.deployment_id = d.id;
    FOR v_condition IN
      SELECT * FROM (VALUES
        ('invalid', d.status IN ('invalid', 'dropped'), jsonb_build_object('status', d.status, 'reason', d.reason)),
        ('drifted', v_drifted ? d.name, jsonb_build_object('features', v_drifted->d.name)),
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
      PERFORM pg_notify('pgscore_alerts', jsonb_build_object('deployment', deployment, 'alert', alert, 'state', state,
                                                             'detail', detail, 'at', now())::text);
      RETURN NEXT;
    END LOOP;
  END LOOP;
END
$$;

-- The alerts raised now.
DROP VIEW IF EXISTS ml.alerts;
CREATE VIEW ml.alerts AS
SELECT d.name AS deployment, s.alert, s.detail, s.changed_at AS raised_at
  FROM ml._alert_state s JOIN ml._deployments d ON d.id = s.deployment_id
 WHERE s.raised;
