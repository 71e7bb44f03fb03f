-- pgscore schema, version 12: capture from the WAL (sql/functions/032_capture.sql).
-- Frozen once released.

-- A deployment that captures from the WAL raises 'capture_lag' when its replication slot is
-- missing, about to lose WAL it needs, or keeps more than 1 GB.
ALTER TABLE ml._alert_state DROP CONSTRAINT _alert_state_alert_check;
ALTER TABLE ml._alert_state ADD CONSTRAINT _alert_state_alert_check
  CHECK (alert IN ('invalid', 'drifted', 'degraded', 'dead_letters', 'capture_lag'));
