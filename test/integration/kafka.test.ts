/**
 * The kafka transport against a real Apache Kafka broker: relay + consumer-group workers score
 * every row once, survive a killed worker and a restarted broker, keep newest-wins, and record
 * poison messages. Skipped where Java or Maven is missing, except in CI, where that fails.
 */
import { CompressionTypes, Kafka, logLevel } from 'kafkajs';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, test } from 'vitest';
import { loadConfig, type Config } from '../../src/config.js';
import { COUNT_RELAYED } from '../../src/db/statements.js';
import { inWritebackTransaction } from '../../src/pipeline/batch.js';
import { claimBatch, ClaimSizer } from '../../src/queue/claim.js';
import type { ClaimedRow } from '../../src/queue/claimed-row.js';
import { KafkaWorker } from '../../src/transport/kafka.js';
import { encodeRows } from '../../src/transport/message.js';
import { Relay } from '../../src/transport/relay.js';
import { listDeployments, type ActiveDeployment } from '../../src/worker/deployments.js';
import { exited, startPgscore } from '../helpers/cli.js';
import { createTestDatabase, pending, push, quietLog, waitFor, type TestDatabase } from '../helpers/db.js';
import { ensureKafkaJars, kafkaAvailable, startKafkaBroker, type KafkaBroker } from '../helpers/kafka-broker.js';
import { registerSums, SUMS_INPUTS, SUMS_OUTPUTS, V1, V2 } from '../helpers/sums.js';

const availability = await kafkaAvailable();
const skipReason = availability.ok ? undefined : availability.reason;
if (skipReason !== undefined && process.env.CI === 'true') {
  test('Kafka prerequisites (required in CI)', () => {
    throw new Error(`cannot run a Kafka broker: ${skipReason}`);
  });
}

const INPUTS = '{"f32": ["a", "b"], "f64": "c", "i32": "d", "i64": "e", "flag": "ok", "tag": "tag"}';

/** A row as the relay of format 1 (before binary messages) produced it: one JSON message per row. */
function formatOneMessage(deployment: ActiveDeployment, row: ClaimedRow, now: number) {
  const encodeValue = (value: unknown): unknown =>
    typeof value === 'number' && !Number.isFinite(value) ? { $f: String(value) } : Array.isArray(value) ? value.map(encodeValue) : value;
  const message = {
    v: 1, d: deployment.id, f: deployment.sql.fingerprint, k: [...row.keys], x: row.xmin, t: row.tid,
    q: Math.round(now - row.ageMs), i: row.values.map(encodeValue),
  };
  return { key: `${deployment.id}:${JSON.stringify(row.keys)}`, value: JSON.stringify(message) };
}

describe.skipIf(skipReason !== undefined)('kafka transport', () => {
  let broker: KafkaBroker;
  let db: TestDatabase;
  let round = 0;

  beforeAll(async () => {
    await ensureKafkaJars();
    [broker, db] = await Promise.all([startKafkaBroker(), createTestDatabase()]);
    await push(db, 'typed', 'typed.onnx');
  });
  afterAll(async () => {
    await broker?.close();
    await db?.drop();
  });

  /** A table whose prediction `total` must equal a + b + c + d + e + ok for every row. */
  async function newTable(): Promise<{ table: string; config: Config; env: Record<string, string> }> {
    round += 1;
    const table = `rows_${round}`;
    await db.sql(`CREATE TABLE ${table} (id int PRIMARY KEY, a real, b real, c float8, d int, e bigint, ok bool, tag text)`);
    await db.sql(`SELECT ml.deploy($1, $2, 'typed', $3, '{"total": "total"}')`, [table, table, INPUTS]);
    const env = {
      DATABASE_URL: db.workerUrl,
      KAFKA_BROKERS: broker.brokers.join(','),
      PGSCORE_KAFKA_TOPIC: `pgscore.test.${round}`,
      PGSCORE_KAFKA_GROUP: `pgscore-test-${round}`,
      PGSCORE_KAFKA_PARTITIONS: '4',
      PGSCORE_POLL_INTERVAL_MS: '200',
    };
    return { table, config: loadConfig(env), env };
  }

  const insert = (table: string, from: number, to: number) =>
    db.sql(`INSERT INTO ${table} SELECT g, g % 7, 1, g % 5, g % 3, g, g % 2 = 0, 't' FROM generate_series(${from}, ${to}) g`);

  /** Rows whose prediction is missing or does not match their current inputs. */
  const wrong = async (table: string) =>
    Number(
      (await db.sql<{ n: string }>(
        `SELECT count(*) AS n FROM ${table} WHERE total IS DISTINCT FROM (a + b + c + d + e + ok::int)`,
      ))[0]!.n,
    );

  it('one failure policy: a model that stops loading pauses its deployment, rows wait queued, a promotion resumes it', async () => {
    const { table, config } = await newTable();
    // The model's bytes go bad after its signature was recorded (what another onnxruntime build
    // would see): the deployment cannot be served, and its rows must not become dead letters.
    await push(db, 'fragile', 'typed.onnx');
    await db.sql(`SELECT ml.undeploy($1)`, [table]);
    await db.sql(`SELECT ml.deploy($1::text, $1::regclass, 'fragile', $2, '{"total": "total"}')`, [table, INPUTS]);
    await db.sql(`UPDATE ml._models SET onnx = '\\x00010203' WHERE name = 'fragile' AND version = 1`);
    const relay = new Relay(db.workerUrl, config, quietLog);
    const worker = new KafkaWorker(db.workerUrl, config, quietLog);
    try {
      await Promise.all([relay.start(), worker.start()]);
      await insert(table, 1, 500);
      // Relayed, consumed, and put back on the queue to wait (with a delay), never dead-lettered.
      await waitFor(async () => {
        const [row] = await db.sql<{ consumed: string }>(
          `SELECT consumed FROM ml._kafka_counts k JOIN ml._deployments d ON d.id = k.deployment_id WHERE d.name = $1`, [table]);
        return Number(row?.consumed ?? 0) >= 500;
      }, 'rows consumed by the Kafka worker');
      expect(await db.sql(`SELECT count(*) AS n FROM ml.errors WHERE deployment = $1`, [table])).toEqual([{ n: '0' }]);
      expect(await db.sql(`SELECT count(*) AS n FROM ${table} WHERE total IS NOT NULL`)).toEqual([{ n: '0' }]);
      await push(db, 'fragile', 'typed.onnx');
      await db.sql(`SELECT ml.promote('fragile', 2)`);
      await waitFor(async () => (await wrong(table)) === 0, 'scored by the promoted version', 60_000);
      expect(await pending(db, table)).toBe(0);
    } finally {
      await worker.stop();
      await relay.stop();
    }
  });

  it('relay and two workers in one group score 200,000 rows: none lost, none stale', async () => {
    const { table, config } = await newTable();
    const relay = new Relay(db.workerUrl, config, quietLog);
    const workers = [new KafkaWorker(db.workerUrl, config, quietLog), new KafkaWorker(db.workerUrl, config, quietLog)];
    const written = [0, 0];
    workers.forEach((worker, i) => worker.on('batch', (b) => (written[i]! += b.written)));
    await relay.start();
    await Promise.all(workers.map((w) => w.start()));
    try {
      const started = performance.now();
      for (let i = 0; i < 4; i++) await insert(table, i * 50_000 + 1, (i + 1) * 50_000);
      await waitFor(async () => (await wrong(table)) === 0, '200,000 rows scored', 180_000);
      const seconds = (performance.now() - started) / 1000;
      console.log(`kafka: 200,000 rows relayed and scored in ${seconds.toFixed(1)} s (${Math.round(200_000 / seconds)} rows/s)`);
      expect(written.every((n) => n > 0)).toBe(true);
      await waitFor(async () => (await pending(db, table)) === 0, 'queue empty');
      // in_kafka follows the committed offsets, which the worker commits at most every 50 ms.
      await waitFor(async () => (await db.sql<{ in_kafka: string }>(
        `SELECT in_kafka FROM ml.status WHERE deployment = $1`, [table]))[0]?.in_kafka === '0', 'offsets committed');
    } finally {
      await Promise.all(workers.map((w) => w.stop()));
      await relay.stop();
    }
  });

  it('a deployment that captures from the WAL: the relay reads the slot, and rows written before and after a relay restart are scored', async () => {
    const { table, config } = await newTable();
    await db.sql(`SELECT ml.undeploy($1)`, [table]);
    await db.sql(`SELECT ml.deploy($1, $2, 'typed', $3, '{"total": "total"}', '{"capture": "wal"}')`, [table, table, INPUTS]);
    let relay = new Relay(db.workerUrl, config, quietLog);
    const worker = new KafkaWorker(db.workerUrl, config, quietLog);
    await relay.start();
    await worker.start();
    try {
      await insert(table, 1, 5_000);
      await db.sql(`UPDATE ${table} SET a = a + 1 WHERE id % 4 = 0`);
      await waitFor(async () => (await wrong(table)) === 0, '5,000 rows scored', 60_000);
      await relay.stop();
      await insert(table, 5_001, 6_000);
      relay = new Relay(db.workerUrl, config, quietLog);
      await relay.start();
      await waitFor(async () => (await wrong(table)) === 0 && (await pending(db, table)) === 0, '6,000 rows scored', 60_000);
      expect((await db.sql<{ n: string }>(`SELECT count(total) AS n FROM ${table}`))[0]!.n).toBe('6000');
    } finally {
      await worker.stop();
      await relay.stop();
      await db.sql(`SELECT ml.undeploy($1)`, [table]);
    }
  });

  it('a killed worker hands its partitions to the other; nothing is lost', async () => {
    const { table, env } = await newTable();
    const relay = startPgscore(['relay'], env);
    const survivor = startPgscore(['worker', '--transport', 'kafka'], env);
    const victim = startPgscore(['worker', '--transport', 'kafka', '--batch-size', '200'], env);
    try {
      await insert(table, 1, 60_000);
      await waitFor(async () => (await wrong(table)) < 55_000, 'scoring under way');
      victim.kill('SIGKILL');
      await exited(victim);
      await waitFor(async () => (await wrong(table)) === 0, 'all rows scored by the survivor', 180_000);
    } finally {
      for (const child of [relay, survivor, victim]) child.kill('SIGTERM');
      await Promise.all([relay, survivor].map(exited));
    }
  });

  it('relay and workers ride out a broker restart; nothing is lost', async () => {
    const { table, config } = await newTable();
    const relay = new Relay(db.workerUrl, config, quietLog);
    const worker = new KafkaWorker(db.workerUrl, config, quietLog);
    await relay.start();
    await worker.start();
    try {
      await insert(table, 1, 20_000);
      await waitFor(async () => (await wrong(table)) < 20_000, 'scoring under way');
      await broker.restart();
      await insert(table, 20_001, 40_000);
      await waitFor(async () => (await wrong(table)) === 0, 'all rows scored after the restart', 180_000);
    } finally {
      await worker.stop();
      await relay.stop();
    }
  });

  it('a row updated 50 times in quick succession ends with the prediction for its last values', async () => {
    const { table, config } = await newTable();
    const relay = new Relay(db.workerUrl, config, quietLog);
    const workers = [new KafkaWorker(db.workerUrl, config, quietLog), new KafkaWorker(db.workerUrl, config, quietLog)];
    await relay.start();
    await Promise.all(workers.map((w) => w.start()));
    try {
      await insert(table, 1, 10);
      for (let v = 1; v <= 50; v++) await db.sql(`UPDATE ${table} SET c = $1`, [v]);
      await waitFor(async () => (await wrong(table)) === 0 && (await pending(db, table)) === 0, 'newest predictions');
      const totals = await db.sql<{ c: number; total: number }>(`SELECT c, total FROM ${table} WHERE id = 1`);
      expect(totals).toEqual([{ c: 50, total: 50 + 1 + 1 + 1 + 1 + 0 }]);
    } finally {
      await Promise.all(workers.map((w) => w.stop()));
      await relay.stop();
    }
  });

  it('a poison message is recorded in ml.errors and the partition keeps moving', async () => {
    const { table, config } = await newTable();
    const worker = new KafkaWorker(db.workerUrl, config, quietLog);
    const relay = new Relay(db.workerUrl, config, quietLog);
    await worker.start();
    try {
      const producer = new Kafka({ brokers: broker.brokers, logLevel: logLevel.NOTHING }).producer();
      await producer.connect();
      await producer.send({
        topic: config.kafkaTopic,
        messages: [
          { key: 'junk', value: 'not json', partition: 0 },
          { key: 'old', value: JSON.stringify({ v: 0, d: 1 }), partition: 0 },
        ],
      });
      await producer.disconnect();
      await relay.start();
      await insert(table, 1, 100);
      await waitFor(async () => (await wrong(table)) === 0, 'rows after the poison scored');
      const errors = await db.sql<{ deployment: string | null; row_key: { partition: number; key: string }; reason: string }>(
        `SELECT deployment, row_key, reason FROM ml.errors ORDER BY row_key->>'offset'`,
      );
      expect(errors.map((e) => [e.deployment, e.row_key.key, e.reason])).toEqual([
        [null, 'junk', expect.stringMatching(/^message is not JSON: /)],
        [null, 'old', 'message is not a pgscore row message v1: v: Invalid input: expected 1'],
      ]);
    } finally {
      await worker.stop();
      await relay.stop();
    }
  });

  it('an upgrade scores the format-1 messages already in the topic, then the binary ones', async () => {
    const { table, config } = await newTable();
    await insert(table, 1, 300);
    // What a relay before the upgrade did: claim, produce one JSON message per row, delete, count.
    const pool = new pg.Pool({ connectionString: db.workerUrl, max: 2 });
    const kafka = new Kafka({ brokers: broker.brokers, logLevel: logLevel.NOTHING });
    const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
    try {
      const admin = kafka.admin();
      await admin.connect();
      await admin.createTopics({ topics: [{ topic: config.kafkaTopic, numPartitions: config.kafkaPartitions }], waitForLeaders: true });
      await admin.disconnect();
      await producer.connect();
      const deployment = (await listDeployments(pool, quietLog)).find((d) => d.name === table)!;
      const relayed = await inWritebackTransaction(pool, async (client) => {
        const { rows } = await claimBatch(client, deployment, 1000, new ClaimSizer(1000));
        const now = Date.now();
        await producer.send({ topic: config.kafkaTopic, acks: -1, compression: CompressionTypes.None, messages: rows.map((row) => formatOneMessage(deployment, row, now)) });
        await client.query(COUNT_RELAYED, [deployment.id, rows.length]);
        return rows.length;
      });
      expect(relayed).toBe(300);
    } finally {
      await producer.disconnect();
      await pool.end();
    }
    expect(await pending(db, table)).toBe(0);

    const relay = new Relay(db.workerUrl, config, quietLog);
    const worker = new KafkaWorker(db.workerUrl, config, quietLog);
    try {
      await Promise.all([relay.start(), worker.start()]);
      await insert(table, 301, 600);
      await waitFor(async () => (await wrong(table)) === 0, 'rows of both formats scored');
      await waitFor(async () => (await pending(db, table)) === 0, 'queue empty');
      // in_kafka follows the committed offsets, which the worker commits at most every 50 ms.
      await waitFor(async () => (await db.sql<{ in_kafka: string }>(
        `SELECT in_kafka FROM ml.status WHERE deployment = $1`, [table]))[0]?.in_kafka === '0', 'offsets committed');
      expect(await db.sql(`SELECT count(*)::int AS n FROM ml.errors WHERE deployment = $1`, [table])).toEqual([{ n: 0 }]);
    } finally {
      await worker.stop();
      await relay.stop();
    }
  });

  it('a damaged binary message is recorded in ml.errors with what is wrong, and the partition keeps moving', async () => {
    const { table, config } = await newTable();
    const worker = new KafkaWorker(db.workerUrl, config, quietLog);
    const relay = new Relay(db.workerUrl, config, quietLog);
    await worker.start();
    try {
      const row: ClaimedRow = { keys: ['1'], ageMs: 0, xmin: '1', tid: '(0,1)', attempts: 0, values: [1, 2, 3, 4, '5', true, 't'] };
      const [good] = encodeRows({ id: 1, keyCount: 1, sql: { fingerprint: 'f' } }, [row, row], 0);
      const newer = Buffer.from(good!);
      newer[4] = 3;
      const producer = new Kafka({ brokers: broker.brokers, logLevel: logLevel.NOTHING }).producer();
      await producer.connect();
      await producer.send({
        topic: config.kafkaTopic,
        messages: [
          { key: 'cut', value: good!.subarray(0, good!.length - 3), partition: 1 },
          { key: 'newer', value: newer, partition: 1 },
        ],
      });
      await producer.disconnect();
      await relay.start();
      await insert(table, 1, 100);
      await waitFor(async () => (await wrong(table)) === 0, 'rows after the damaged messages scored');
      const errors = await db.sql<{ deployment: string | null; row_key: { key: string }; reason: string }>(
        `SELECT deployment, row_key, reason FROM ml.errors WHERE row_key->>'topic' = $1 ORDER BY row_key->>'offset'`, [config.kafkaTopic],
      );
      expect(errors.map((e) => [e.deployment, e.row_key.key, e.reason])).toEqual([
        [null, 'cut', 'message is not a pgscore row message v2: truncated: a value tag at byte 107 needs 1 byte(s), the message has 107'],
        [null, 'newer', 'message is not a pgscore row message v2: format version 3 is not known to this worker (it reads 1 and 2); upgrade it'],
      ]);
    } finally {
      await worker.stop();
      await relay.stop();
    }
  });

  it('a row relayed twice that both times cannot be scored, handled in one chunk, is one dead letter', async () => {
    const { table, config } = await newTable();
    const relay = new Relay(db.workerUrl, config, quietLog);
    const worker = new KafkaWorker(db.workerUrl, config, quietLog);
    let failures = 0;
    worker.on('failure', () => (failures += 1));
    const inKafka = async () =>
      Number((await db.sql<{ in_kafka: string | null }>(`SELECT in_kafka FROM ml.status WHERE deployment = $1`, [table]))[0]?.in_kafka ?? 0);
    try {
      // Relayed while no worker runs, so both messages of the row arrive in one fetch.
      await relay.start();
      await db.sql(`INSERT INTO ${table} VALUES (1, NULL, 1, 1, 1, 1, true, 't'), (2, 1, 1, 1, 1, 1, true, 't')`);
      await waitFor(async () => (await inKafka()) === 2, 'the rows relayed');
      await db.sql(`UPDATE ${table} SET c = 2 WHERE id = 1`);
      await waitFor(async () => (await inKafka()) === 3, 'the changed row relayed again');
      await worker.start();
      await waitFor(async () => (await inKafka()) === 0, 'the messages handled');
      const errors = await db.sql<{ row_key: unknown; reason: string }>(`SELECT row_key, reason FROM ml.errors WHERE deployment = $1`, [table]);
      expect(errors).toEqual([{ row_key: { id: 1 }, reason: 'column "a" is NULL; model input f32 has no NULL' }]);
      expect(await db.sql(`SELECT id, total FROM ${table} ORDER BY id`)).toEqual([{ id: 1, total: null }, { id: 2, total: 6 }]);
      expect(failures).toBe(0);
    } finally {
      await worker.stop();
      await relay.stop();
    }
  });

  it('a failing input expression and a row the table refuses are dead letters; the rest of the batch is scored', async () => {
    round += 1;
    const table = `refusing_${round}`;
    await db.sql(`CREATE TABLE ${table} (id int PRIMARY KEY, a text, b real, c float8, d int, e bigint, ok bool, tag text,
                                         total float8 CONSTRAINT total_not_6 CHECK (total IS NULL OR total <> 6))`);
    await db.sql(`SELECT ml.deploy($1, $2, 'typed', $3, '{"total": "total"}')`,
      [table, table, INPUTS.replace('["a", "b"]', '["a::real", "b"]')]);
    const config = loadConfig({
      DATABASE_URL: db.workerUrl, KAFKA_BROKERS: broker.brokers.join(','), PGSCORE_KAFKA_TOPIC: `pgscore.test.${round}`,
      PGSCORE_KAFKA_GROUP: `pgscore-test-${round}`, PGSCORE_KAFKA_PARTITIONS: '4', PGSCORE_POLL_INTERVAL_MS: '200',
    });
    const relay = new Relay(db.workerUrl, config, quietLog);
    const worker = new KafkaWorker(db.workerUrl, config, quietLog);
    try {
      await Promise.all([relay.start(), worker.start()]);
      // Row 2's a is not a number; row 3 sums to 6, which the CHECK refuses; the other 48 are fine.
      await db.sql(`INSERT INTO ${table} SELECT g, CASE g WHEN 2 THEN 'abc' ELSE '1' END, 1, CASE g WHEN 3 THEN 1 ELSE 2 END, 1, 1, true, 't'
                      FROM generate_series(1, 50) g`);
      const errors = () => db.sql<{ row_key: { id: number }; reason: string }>(
        `SELECT row_key, reason FROM ml.errors WHERE deployment = $1 ORDER BY row_key->>'id'`, [table]);
      await waitFor(async () => (await errors()).length === 2 &&
        (await db.sql<{ n: string }>(`SELECT count(*) AS n FROM ${table} WHERE total = 7`))[0]!.n === '48', 'rows handled');
      expect(await errors()).toEqual([
        { row_key: { id: 2 }, reason: 'model input f32: expression (a::real) failed: invalid input syntax for type real: "abc"' },
        { row_key: { id: 3 }, reason: `the prediction cannot be written to the table: new row for relation "${table}" violates check constraint "total_not_6"` },
      ]);
      expect(await pending(db, table)).toBe(0);
    } finally {
      await worker.stop();
      await relay.stop();
    }
  });

  it('splits, shadows and promotions work through Kafka: every row is scored by the version its provenance names', async () => {
    await registerSums(db);
    const { table, config } = await newTable();
    await db.sql(`SELECT ml.undeploy($1)`, [table]);
    await db.sql(`SELECT ml.deploy($1::text, $1::regclass, 'sums', $2, $3, '{"variants": {"sums@1": 50, "sums@2": 50}, "shadow": "sums@2"}')`,
      [table, SUMS_INPUTS, SUMS_OUTPUTS]);
    const relay = new Relay(db.workerUrl, config, quietLog);
    const worker = new KafkaWorker(db.workerUrl, config, quietLog);
    const mismatched = () => db.sql<{ n: number }>(`
      SELECT count(*)::int AS n FROM ${table}
       WHERE total IS NULL OR total IS DISTINCT FROM CASE ${table}_model WHEN 'sums@1' THEN ${V1} WHEN 'sums@2' THEN ${V2} END`);
    try {
      await Promise.all([relay.start(), worker.start()]);
      await insert(table, 1, 2000);
      await waitFor(async () => (await db.sql(`SELECT 1 FROM ${table} WHERE total IS NULL LIMIT 1`)).length === 0, 'split rows scored');
      expect(await mismatched()).toEqual([{ n: 0 }]);
      const split = await db.sql<{ model: string; n: number }>(`SELECT ${table}_model AS model, count(*)::int AS n FROM ${table} GROUP BY 1 ORDER BY 1`);
      expect(split.map((r) => r.model)).toEqual(['sums@1', 'sums@2']);
      for (const r of split) expect(r.n).toBeGreaterThan(800);
      await waitFor(async () => (await db.sql(`SELECT 1 FROM ml.compare WHERE deployment = $1 AND role = 'shadow' AND rows = 2000`, [table])).length === 1,
        'the shadow logged');

      // The promotion ends the split; rows written after it are all scored by version 2, even
      // by a Kafka worker that has not reloaded yet (it re-queues rows relayed for a newer version).
      await db.sql(`SELECT ml.promote('sums', 2)`);
      await insert(table, 2001, 2500);
      await waitFor(async () => (await db.sql(`SELECT 1 FROM ${table} WHERE id > 2000 AND total IS NULL LIMIT 1`)).length === 0, 'new rows scored');
      expect(await db.sql(`SELECT ${table}_model AS model, count(*)::int AS n FROM ${table} WHERE id > 2000 GROUP BY 1`)).toEqual([{ model: 'sums@2', n: 500 }]);
      expect(await mismatched()).toEqual([{ n: 0 }]);
    } finally {
      await Promise.all([relay.stop(), worker.stop()]);
    }
  });
});
