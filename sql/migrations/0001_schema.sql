-- pgscore schema, version 1. Frozen once released: change the schema in a new numbered file.
-- Tables only; functions and views live in sql/functions and are re-applied on every migrate.

CREATE TABLE ml._models (
  name       text        NOT NULL CHECK (name ~ '^[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}$'),
  version    int         NOT NULL CHECK (version > 0),
  onnx       bytea       NOT NULL,
  sha256     text        NOT NULL,
  metadata   jsonb       NOT NULL DEFAULT '{}',
  -- Filled by `pgscore model push` or by the first worker that loads the model.
  signature  jsonb,
  load_error text,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (name, version)
);

CREATE TABLE ml._aliases (
  model      text        NOT NULL,
  alias      text        NOT NULL CHECK (alias ~ '^[A-Za-z_][A-Za-z0-9_-]{0,62}$'),
  version    int         NOT NULL,
  -- Versions the alias pointed at before, oldest first; ml.rollback pops the last one.
  history    int[]       NOT NULL DEFAULT '{}',
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (model, alias),
  FOREIGN KEY (model, version) REFERENCES ml._models (name, version)
);

CREATE TABLE ml._deployments (
  id         int         GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  name       text        NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9_][A-Za-z0-9_.-]{0,39}$'),
  source     oid         NOT NULL,
  model      text        NOT NULL,
  -- Exactly one of version (pinned, 'churn@3') and alias ('churn', 'churn@staging') is set.
  version    int,
  alias      text,
  inputs     jsonb,
  outputs    jsonb,
  options    jsonb       NOT NULL DEFAULT '{}',
  -- The mapping resolved against the model signature: what the trigger and the worker read.
  plan       jsonb,
  status     text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'active', 'invalid')),
  reason     text,
  created_at timestamptz NOT NULL DEFAULT now(),
  CHECK ((version IS NULL) <> (alias IS NULL))
);

CREATE TABLE ml._dead_letters (
  deployment_id int         NOT NULL REFERENCES ml._deployments (id) ON DELETE CASCADE,
  row_key       jsonb       NOT NULL,
  reason        text        NOT NULL,
  attempts      int         NOT NULL DEFAULT 1,
  first_seen    timestamptz NOT NULL DEFAULT now(),
  last_seen     timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (deployment_id, row_key)
);

-- One row per scored batch, for ml.status. Unlogged: losing it in a crash loses statistics, not data.
CREATE UNLOGGED TABLE ml._batches (
  deployment_id int         NOT NULL REFERENCES ml._deployments (id) ON DELETE CASCADE,
  finished_at   timestamptz NOT NULL DEFAULT now(),
  scored        int         NOT NULL,
  dead          int         NOT NULL,
  -- Latency histogram (queued -> committed); see ml._latency_quantile for the buckets.
  latency_hist  int[]       NOT NULL
);
CREATE INDEX ON ml._batches (deployment_id, finished_at);
