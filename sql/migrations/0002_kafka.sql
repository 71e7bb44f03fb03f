-- pgscore schema, version 2: the kafka transport. Frozen once released.

-- Messages a Kafka worker could not decode, kept with the reason; shown in ml.errors.
CREATE TABLE ml._poison_messages (
  id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  topic       text        NOT NULL,
  "partition" int         NOT NULL,
  "offset"    bigint      NOT NULL,
  message_key text,
  reason      text        NOT NULL,
  seen_at     timestamptz NOT NULL DEFAULT now()
);

-- Rows the relay produced and rows Kafka workers consumed, per deployment: their difference is
-- what ml.status shows as in_kafka.
CREATE TABLE ml._kafka_counts (
  deployment_id int    PRIMARY KEY REFERENCES ml._deployments (id) ON DELETE CASCADE,
  relayed       bigint NOT NULL DEFAULT 0,
  consumed      bigint NOT NULL DEFAULT 0
);
