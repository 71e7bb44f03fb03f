-- pgscore schema, version 3: production safety. Frozen once released.

-- 'dropped': the deployment's table was dropped; its queue went with it, its dead letters stay.
ALTER TABLE ml._deployments DROP CONSTRAINT _deployments_status_check;
ALTER TABLE ml._deployments ADD CONSTRAINT _deployments_status_check
  CHECK (status IN ('pending', 'active', 'invalid', 'dropped'));

-- The table's qualified name as of the last activation, shown once the table is gone.
ALTER TABLE ml._deployments ADD COLUMN source_name text;
UPDATE ml._deployments d
   SET source_name = (SELECT format('%I.%I', n.nspname, c.relname)
                        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                       WHERE c.oid = d.source);
