-- pgscore schema, version 9: Kafka lag from offsets. Frozen once released.

-- The messages the relay produced, where the broker appended them, and how many rows of which
-- deployment each carries; recorded in the relay's transaction that deletes the rows from their
-- queue. A worker deletes them once the group's committed offset passed them. Insert-only for the
-- relay, so its lanes never wait on one another here. No foreign key: a relay batch must not lock
-- its deployment's row (ml.undeploy takes it); ml.status joins on the deployments there are.
CREATE TABLE ml._kafka_messages (
  topic         text   NOT NULL,
  "partition"   int    NOT NULL,
  "offset"      bigint NOT NULL,
  deployment_id int    NOT NULL,
  rows          int    NOT NULL,
  PRIMARY KEY (topic, "partition", "offset")
);
CREATE INDEX ON ml._kafka_messages (deployment_id);

-- The workers' group's committed offset (the next message to read) per partition, as the workers
-- committed it. ml.status.in_kafka = the rows of the messages at or past it.
CREATE TABLE ml._kafka_committed (
  topic       text   NOT NULL,
  "partition" int    NOT NULL,
  "offset"    bigint NOT NULL,
  PRIMARY KEY (topic, "partition")
);
