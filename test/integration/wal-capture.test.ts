import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Worker } from '../../src/worker/worker.js';
import { createTestDatabase, pending, push, startWorker, waitFor, type TestDatabase } from '../helpers/db.js';

/**
 * Capture from the WAL (deploy option "capture": "wal", sql/functions/032_capture.sql and
 * src/capture/): no trigger on the application's table, rows queued by the worker from the
 * replication slot. What a user sees is what the triggers give: every row scored from its
 * current inputs, newest wins, nothing lost across a worker restart or a lost slot.
 * examples/models/typed.onnx computes total = a + b + c + d + e + ok.
 */
const TYPED_INPUTS = '{"f32": ["a", "b"], "f64": "c", "i32": "d", "i64": "e", "flag": "ok", "tag": "tag"}';
const EXPECTED = 'a + b + c + d + e + ok::int';
const COLUMNS = 'a real, b real, c double precision, d int, e bigint, ok boolean, tag text';
const VALUES = (g: string) => `${g} % 7, ${g} % 11, ${g} % 13, ${g} % 17, ${g} % 1000, ${g} % 2 = 0, 't'`;
const WAL = '{"capture": "wal"}';

describe('capture from the WAL', () => {
  let db: TestDatabase;
  let worker: Worker | undefined;

  beforeAll(async () => {
    db = await createTestDatabase();
    await push(db, 'typed', 'typed.onnx');
  });
  afterAll(async () => {
    await worker?.stop();
    await db?.drop();
  });

  const deploy = async (table: string, options = WAL) =>
    db.sql(`SELECT ml.deploy($1, $2, 'typed', $3, '{"total": "total"}', $4)`, [table, table, TYPED_INPUTS, options]);
  const check = async (table: string) =>
    (await db.sql<{ total: string; scored: string; wrong: string }>(
      `SELECT count(*) AS total, count(total) AS scored, count(*) FILTER (WHERE total IS DISTINCT FROM ${EXPECTED}) AS wrong FROM ${table}`))[0]!;
  const drained = async (table: string, timeoutMs = 30_000) => {
    worker ??= await startWorker(db);
    await waitFor(async () => (await check(table)).wrong === '0' && (await pending(db, table)) === 0, `${table} scored`, timeoutMs);
    return check(table);
  };
  const stopWorker = async () => {
    await worker?.stop();
    worker = undefined;
  };
  const batches = async () => Number((await db.sql<{ n: string }>('SELECT count(*) AS n FROM ml._batches'))[0]!.n);

  it('deploys without triggers, and scores inserted and updated rows; its own write-backs are not captured again', async () => {
    await db.sql(`CREATE TABLE wal_rows (id bigserial PRIMARY KEY, ${COLUMNS})`);
    await db.sql(`INSERT INTO wal_rows (a, b, c, d, e, ok, tag) SELECT ${VALUES('g')} FROM generate_series(1, 50) g`);
    await deploy('wal_rows');
    expect(await db.sql(`SELECT tgname FROM pg_trigger WHERE tgrelid = 'wal_rows'::regclass`)).toEqual([]);
    expect(await db.sql(`SELECT plan->>'capture' AS capture FROM ml._deployments WHERE name = 'wal_rows'`)).toEqual([{ capture: 'wal' }]);
    // The rows there at deploy come from its backfill; the rows after it from the WAL.
    expect(await drained('wal_rows')).toEqual({ total: '50', scored: '50', wrong: '0' });
    await db.sql(`INSERT INTO wal_rows (a, b, c, d, e, ok, tag) SELECT ${VALUES('g')} FROM generate_series(1, 2000) g`);
    for (let i = 0; i < 20; i++) await db.sql(`INSERT INTO wal_rows (a, b, c, d, e, ok, tag) VALUES (${VALUES(String(i))})`);
    await db.sql(`UPDATE wal_rows SET a = a + 1000 WHERE id % 3 = 0`);
    expect(await drained('wal_rows')).toEqual({ total: '2070', scored: '2070', wrong: '0' });
    // Quiet now: no batch follows the last one (a captured write-back would queue its rows again).
    const settled = await batches();
    await new Promise((resolve) => setTimeout(resolve, 1500));
    expect(await batches()).toBe(settled);
    expect(await pending(db, 'wal_rows')).toBe(0);
  });

  it('rows written while the worker is down are scored when it comes back (the slot kept them)', async () => {
    await drained('wal_rows');
    await stopWorker();
    await db.sql(`INSERT INTO wal_rows (a, b, c, d, e, ok, tag) SELECT ${VALUES('g')} FROM generate_series(1, 500) g`);
    await db.sql(`UPDATE wal_rows SET b = b + 1 WHERE id <= 100`);
    expect(await drained('wal_rows')).toEqual({ total: '2570', scored: '2570', wrong: '0' });
  });

  it('a slot dropped while the worker was down is created again, and the table backfilled', async () => {
    await drained('wal_rows');
    await stopWorker();
    const [status] = await db.sql(`SELECT capture, capture_lag_bytes >= 0 AS lag_known FROM ml.status WHERE deployment = 'wal_rows'`);
    expect(status).toEqual({ capture: 'wal', lag_known: true });
    await db.sql(`SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = current_database()`);
    // No slot: the alert says so, and the rows written now are in no WAL pgscore reads.
    expect(await db.sql(`SELECT deployment, alert, state, detail->>'problem' AS problem FROM ml._check_alerts(false) WHERE alert = 'capture_lag'`))
      .toEqual([{ deployment: 'wal_rows', alert: 'capture_lag', state: 'raised', problem: expect.stringMatching(/no replication slot/) }]);
    await db.sql(`INSERT INTO wal_rows (a, b, c, d, e, ok, tag) SELECT ${VALUES('g')} FROM generate_series(1, 300) g`);
    expect(await drained('wal_rows')).toEqual({ total: '2870', scored: '2870', wrong: '0' });
    // The worker's own alert check may clear it first.
    await waitFor(async () => {
      await db.sql(`SELECT ml._check_alerts(false)`);
      return (await db.sql(`SELECT 1 FROM ml.alerts WHERE alert = 'capture_lag'`)).length === 0;
    }, 'capture_lag cleared', 15_000);
    expect(await db.sql(`SELECT kind FROM ml.runs WHERE deployment = 'wal_rows' ORDER BY started_at DESC LIMIT 1`)).toEqual([{ kind: 'backfill' }]);
  });

  it('a slot that lost WAL it needed (max_slot_wal_keep_size) is created again, and the table backfilled', async () => {
    await drained('wal_rows');
    await stopWorker();
    await db.sql(`INSERT INTO wal_rows (a, b, c, d, e, ok, tag) SELECT ${VALUES('g')} FROM generate_series(1, 100) g`);
    // Keep at most one segment for the slot, write four, and let checkpoints remove them.
    await db.sql(`ALTER SYSTEM SET max_slot_wal_keep_size = '16MB'`);
    await db.sql('SELECT pg_reload_conf()');
    try {
      await db.sql('CREATE TABLE wal_filler (id int, pad text)');
      await waitFor(async () => {
        await db.sql(`INSERT INTO wal_filler SELECT g, repeat('x', 2000) FROM generate_series(1, 10000) g`);
        await db.sql('SELECT pg_switch_wal()');
        await db.sql('CHECKPOINT');
        return (await db.sql<{ wal_status: string }>(`SELECT wal_status FROM pg_replication_slots WHERE database = current_database()`))[0]?.wal_status === 'lost';
      }, 'the slot to lose WAL', 60_000);
    } finally {
      await db.sql('ALTER SYSTEM RESET max_slot_wal_keep_size');
      await db.sql('SELECT pg_reload_conf()');
      await db.sql('DROP TABLE IF EXISTS wal_filler');
    }
    expect(await drained('wal_rows')).toEqual({ total: '2970', scored: '2970', wrong: '0' });
  });

  it('partitioned tables and composite text keys', async () => {
    await db.sql(`CREATE TABLE wal_parts (region text, id int, ${COLUMNS}, PRIMARY KEY (region, id)) PARTITION BY LIST (region)`);
    await db.sql(`CREATE TABLE wal_parts_eu PARTITION OF wal_parts FOR VALUES IN ('eu')`);
    await db.sql(`CREATE TABLE wal_parts_us PARTITION OF wal_parts FOR VALUES IN ('us', 'u''s "x"')`);
    await deploy('wal_parts');
    await db.sql(`INSERT INTO wal_parts SELECT CASE WHEN g % 3 = 0 THEN 'eu' WHEN g % 3 = 1 THEN 'us' ELSE 'u''s "x"' END, g, ${VALUES('g')} FROM generate_series(1, 900) g`);
    // Written to a partition directly.
    await db.sql(`INSERT INTO wal_parts_eu SELECT 'eu', g, ${VALUES('g')} FROM generate_series(1000, 1010) g`);
    await db.sql(`UPDATE wal_parts SET c = c + 1 WHERE id % 5 = 0`);
    expect(await drained('wal_parts')).toEqual({ total: '911', scored: '911', wrong: '0' });
  });

  it('a table that loses its replica identity turns the deployment invalid, and the application keeps writing', async () => {
    await db.sql(`CREATE TABLE wal_ident (id int PRIMARY KEY, ${COLUMNS})`);
    await deploy('wal_ident');
    await db.sql(`ALTER TABLE wal_ident REPLICA IDENTITY FULL`);
    await db.sql(`INSERT INTO wal_ident SELECT g, ${VALUES('g')} FROM generate_series(1, 100) g`);
    await db.sql(`UPDATE wal_ident SET a = a + 1`);
    expect(await drained('wal_ident')).toEqual({ total: '100', scored: '100', wrong: '0' });
    await db.sql(`ALTER TABLE wal_ident REPLICA IDENTITY NOTHING`);
    // Published without a replica identity, this UPDATE would fail.
    await db.sql(`UPDATE wal_ident SET a = a + 1`);
    const [status] = await db.sql<{ status: string; reason: string }>(`SELECT status, reason FROM ml.deployments WHERE deployment = 'wal_ident'`);
    expect(status).toMatchObject({ status: 'invalid', reason: expect.stringContaining('REPLICA IDENTITY NOTHING') });
  });

  it('refuses a batch deployment that captures from the WAL, and an unknown capture', async () => {
    await db.sql(`CREATE TABLE wal_refused (id int PRIMARY KEY, ${COLUMNS})`);
    await expect(deploy('wal_refused', '{"capture": "wal", "mode": "batch"}')).rejects.toThrow(/applies to live deployments/);
    await expect(deploy('wal_refused', '{"capture": "logical"}')).rejects.toThrow(/must be 'trigger' or 'wal'/);
  });

  it('undeploying the last WAL-captured deployment drops the slot, which would keep WAL', async () => {
    await drained('wal_rows');
    for (const name of ['wal_rows', 'wal_parts', 'wal_ident']) await db.sql(`SELECT ml.undeploy($1)`, [name]);
    await waitFor(async () => (await db.sql(`SELECT 1 FROM pg_replication_slots WHERE database = current_database()`)).length === 0,
      'slot dropped', 15_000);
    expect(await db.sql(`SELECT count(*)::int AS n FROM pg_publication_tables WHERE pubname = 'pgscore'`)).toEqual([{ n: 0 }]);
  });
});
