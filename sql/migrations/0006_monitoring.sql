-- pgscore schema, version 6: monitoring (baselines, drift counts). Frozen once released.

-- What a model version was trained on, as compact summaries per feature (never the rows):
-- feature name ('X[0]', 'age', output 'probabilities[1]') → {"kind": "numeric", "edges": [9 cut
-- points at the deciles], "freqs": [10 shares], "min", "max", "nulls"} or {"kind": "categorical",
-- "categories": [...], "freqs": [share per category, then the rest], "nulls"}. Set from a file
-- (`pgscore model push --baseline`), a query (ml.set_baseline) or the first rows a worker scores.
CREATE TABLE ml._baselines (
  model      text        NOT NULL,
  version    int         NOT NULL,
  origin     text        NOT NULL CHECK (origin IN ('file', 'query', 'first_rows')),
  rows       bigint      NOT NULL,
  inputs     jsonb       NOT NULL,
  -- NULL until the worker summarised the version's first predictions.
  outputs    jsonb,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (model, version),
  FOREIGN KEY (model, version) REFERENCES ml._models (name, version) ON DELETE CASCADE
);

-- Live values of each deployment per minute, binned by the baseline of the version that scored
-- them: the worker adds its counts every few seconds; ml.drift sums the last hour and day.
CREATE TABLE ml._drift_counts (
  deployment_id int         NOT NULL REFERENCES ml._deployments (id) ON DELETE CASCADE,
  model         text        NOT NULL,
  kind          text        NOT NULL CHECK (kind IN ('input', 'output')),
  feature       text        NOT NULL,
  minute        timestamptz NOT NULL,
  counts        bigint[]    NOT NULL,
  nulls         bigint      NOT NULL,
  out_of_range  bigint      NOT NULL,
  rows          bigint      NOT NULL,
  PRIMARY KEY (deployment_id, model, kind, feature, minute)
);

-- The alerts each deployment has raised (invalid, drifted, degraded, dead letters): a change is
-- sent once, with NOTIFY pgscore_alerts, when ml._check_alerts finds it.
CREATE TABLE ml._alert_state (
  deployment_id int         NOT NULL REFERENCES ml._deployments (id) ON DELETE CASCADE,
  alert         text        NOT NULL CHECK (alert IN ('invalid', 'drifted', 'degraded', 'dead_letters')),
  raised        boolean     NOT NULL,
  -- The dead letters counted at the last check.
  seen          bigint,
  detail        jsonb,
  changed_at    timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (deployment_id, alert)
);
