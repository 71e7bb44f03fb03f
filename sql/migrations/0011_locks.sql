-- pgscore schema, version 11: locks and alerts no role outside pgscore's can take or forge.
-- Frozen once released.

-- Advisory locks live in one namespace every connected role may lock in: holding pgscore's keys
-- silenced alerts, delayed schedules and made the worker poll hot. The locks below are on ml
-- objects, which a role without rights on ml cannot even name (LOCK and SELECT ... FOR UPDATE
-- check privileges before they lock), and admins, who may SELECT them, can take only ACCESS
-- SHARE, which conflicts with none of the modes pgscore takes.

-- The wake-up (sql/functions/078_locks.sql): a worker that runs out of work holds this table in
-- SHARE mode; a writer's trigger tries ROW EXCLUSIVE without waiting, and sends NOTIFY only when
-- it cannot have it. No rows, ever: autovacuum has nothing to do here.
CREATE TABLE ml._wake ();

-- Leader election: one row per task only one worker at a time should do. The worker that locks
-- the row (FOR UPDATE SKIP LOCKED, in the task's transaction) does it; the others skip it.
CREATE TABLE ml._leaders (
  task text PRIMARY KEY
);
INSERT INTO ml._leaders (task) VALUES ('maintain'), ('alerts'), ('schedule');

-- Every alert change, as sent on the pgscore_alerts channel. The channel's payload carries the
-- event's id: a listener reads the row back (ml.alert_events) to tell pgscore's alerts from a
-- NOTIFY any role may send with any payload.
CREATE TABLE ml._alert_events (
  id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  deployment_id int,
  deployment    text        NOT NULL,
  alert         text        NOT NULL,
  state         text        NOT NULL CHECK (state IN ('raised', 'cleared')),
  detail        jsonb,
  at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON ml._alert_events (at);
