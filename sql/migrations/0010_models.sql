-- pgscore schema, version 10: large models and removed versions. Frozen once released.

-- A model's bytes are read by the workers in slices (substring() of onnx). Stored uncompressed,
-- a slice reads only its own TOAST chunks; compressed, every slice would decompress the value
-- from its start (quadratic in the model's size). ONNX weights hardly compress anyway.
-- Applies to models registered from now on.
ALTER TABLE ml._models ALTER COLUMN onnx SET STORAGE EXTERNAL;

-- Versions removed with ml.remove_model: who removed what, and the highest version a name ever
-- had, so that a version number is never given twice (predictions, drift counts and logs name
-- versions as 'churn@3').
CREATE TABLE ml._removed_models (
  name       text        NOT NULL,
  version    int         NOT NULL,
  sha256     text        NOT NULL,
  size_bytes bigint      NOT NULL,
  removed_by text        NOT NULL DEFAULT session_user,
  removed_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (name, version)
);

-- Models above what one value holds (1 GiB): ml._models.onnx holds the first part, and the rest
-- follow here in order (`pgscore model push` writes them in the transaction that registers the
-- model). ml._models.sha256 is then the whole file's, which the worker checks once it has read
-- every part.
CREATE TABLE ml._model_parts (
  name    text   NOT NULL,
  version int    NOT NULL,
  part    int    NOT NULL CHECK (part > 0),
  bytes   bytea  NOT NULL,
  PRIMARY KEY (name, version, part),
  FOREIGN KEY (name, version) REFERENCES ml._models (name, version) ON DELETE CASCADE
);
ALTER TABLE ml._model_parts ALTER COLUMN bytes SET STORAGE EXTERNAL;
