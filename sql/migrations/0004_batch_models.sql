-- pgscore schema, version 4: which model version scored each batch (ml.status.versions_in_use).
-- Frozen once released.
ALTER TABLE ml._batches ADD COLUMN model text;
