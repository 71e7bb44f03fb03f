-- pgscore schema, version 7: the prediction log keeps one row per batch. Frozen once released.

-- One row per batch, model and role, with one array element per prediction, instead of one row
-- per prediction: a logged batch of 1,000 rows is one insert and one index entry (measured: the
-- per-row log cost 3.3 us of the server's 16 us per scored row). Same partitions per UTC day,
-- same upkeep (ml._maintain), same privileges: workers may only INSERT, admins only SELECT.
CREATE TABLE ml._prediction_batches (
  deployment_id int         NOT NULL,
  -- name@version of the model that made the predictions.
  model         text        NOT NULL,
  -- live: the deployment's one model; variant: one model of a split; shadow: logged only.
  role          text        NOT NULL CHECK (role IN ('live', 'variant', 'shadow')),
  -- Per prediction: the row's primary key ({"id": 42}), its outputs (prediction column → value;
  -- NULL when the model could not score the row) and the error (NULL when it could).
  row_keys      jsonb[]     NOT NULL,
  outputs       jsonb[],
  errors        text[],
  -- The model's run time for the batch, per row, in microseconds.
  score_us      real,
  scored_at     timestamptz NOT NULL DEFAULT now(),
  CHECK (cardinality(outputs) IS NULL OR cardinality(outputs) = cardinality(row_keys)),
  CHECK (cardinality(errors) IS NULL OR cardinality(errors) = cardinality(row_keys))
) PARTITION BY RANGE (scored_at);
CREATE INDEX ON ml._prediction_batches (deployment_id, scored_at);

-- The log already written moves over, a partition per day it has.
DO $$
DECLARE
  v_day date;
BEGIN
  FOR v_day IN
    SELECT to_date(substr(c.relname, 14), 'YYYYMMDD') FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
     WHERE i.inhparent = 'ml._predictions'::regclass AND c.relname ~ '^_predictions_\d{8}$'
  LOOP
    EXECUTE format('CREATE TABLE ml.%I PARTITION OF ml._prediction_batches FOR VALUES FROM (%L) TO (%L)',
                   '_prediction_batches_' || to_char(v_day, 'YYYYMMDD'),
                   v_day::timestamp AT TIME ZONE 'UTC', (v_day + 1)::timestamp AT TIME ZONE 'UTC');
  END LOOP;
END
$$;
INSERT INTO ml._prediction_batches (deployment_id, model, role, row_keys, outputs, errors, score_us, scored_at)
SELECT deployment_id, model, role, array_agg(row_key), array_agg(outputs), array_agg(error), avg(score_us), scored_at
  FROM ml._predictions
 GROUP BY deployment_id, model, role, scored_at;
DROP TABLE ml._predictions;

-- What the log was: one row per prediction, for ml.compare, ml.performance and the people who
-- read it. A query on deployment_id and scored_at reads only the batches it needs.
CREATE VIEW ml._predictions AS
SELECT b.deployment_id, p.row_key, b.model, b.role, p.outputs, p.error, b.score_us, b.scored_at
  FROM ml._prediction_batches b
 CROSS JOIN LATERAL unnest(b.row_keys, b.outputs, b.errors) AS p(row_key, outputs, error);
