-- pgscore schema, version 12: the prediction log stores a batch's predictions by column.
-- Frozen once released.

-- A logged batch used to hold one jsonb object per prediction for its key and one for its
-- outputs (row_keys, outputs): building them was most of the log's cost, about 4 µs of the
-- server's CPU per prediction (measured 2026-12-07, 1,000-row batches). Batches logged from now
-- on keep one array per key column and per output instead, in `columns`:
--   {"keys": {"<key column>": [...]}, "outputs": {"<prediction column>": [...]}}
-- with element i of every array belonging to prediction i. ml._predictions reads both forms, so
-- what was logged before stays readable, unchanged.
ALTER TABLE ml._prediction_batches
  ADD COLUMN columns jsonb,
  ALTER COLUMN row_keys DROP NOT NULL,
  ADD CONSTRAINT _prediction_batches_one_form CHECK ((row_keys IS NULL) <> (columns IS NULL));
