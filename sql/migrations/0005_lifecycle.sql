-- pgscore schema, version 5: the model lifecycle (prediction log, batch runs, settings).
-- Frozen once released.

-- Every prediction the live model (sampled), a split's variants and a shadow model made, and
-- every row one of them could not score. Append-only; one partition per day (UTC), created ahead
-- and dropped after the retention by ml._maintain(). No foreign key: a deployment's log outlives
-- it until the retention drops it.
CREATE TABLE ml._predictions (
  deployment_id int         NOT NULL,
  row_key       jsonb       NOT NULL,
  -- name@version of the model that made the prediction.
  model         text        NOT NULL,
  -- live: the deployment's one model; variant: one model of a split; shadow: logged only.
  role          text        NOT NULL CHECK (role IN ('live', 'variant', 'shadow')),
  -- Prediction column → value; NULL when the model could not score the row (see error).
  outputs       jsonb,
  error         text,
  -- The model's run time for the row's batch, per row, in microseconds.
  score_us      real,
  scored_at     timestamptz NOT NULL DEFAULT now()
) PARTITION BY RANGE (scored_at);
CREATE INDEX ON ml._predictions (deployment_id, scored_at);

-- Batch runs: a scheduled run of a batch deployment, ml.run_now, ml.backfill, a rescore after
-- ml.promote. A run queues its rows (queue sequence numbers first_seq..last_seq) and is finished
-- once none of them is left.
CREATE TABLE ml._runs (
  id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  deployment_id int         NOT NULL,
  deployment    text        NOT NULL,
  kind          text        NOT NULL CHECK (kind IN ('schedule', 'manual', 'backfill', 'promote')),
  -- The schedule's fire time (kind 'schedule'): one run per deployment and time, whichever worker starts it.
  scheduled_for timestamptz,
  model         text,
  filter        text,
  rows          bigint      NOT NULL DEFAULT 0,
  first_seq     bigint,
  last_seq      bigint,
  started_at    timestamptz NOT NULL DEFAULT now(),
  finished_at   timestamptz,
  state         text        NOT NULL DEFAULT 'running' CHECK (state IN ('running', 'finished', 'cancelled')),
  dead_letters  bigint,
  UNIQUE (deployment_id, scheduled_for)
);
CREATE INDEX ON ml._runs (state) WHERE state = 'running';

-- Settings an admin changes with ml.configure (see ml.settings for names and defaults).
CREATE TABLE ml._settings (
  name       text        PRIMARY KEY,
  value      text        NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
);
