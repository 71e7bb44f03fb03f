import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrate } from '../../src/db/migrate.js';
import type { PgscoreError } from '../../src/errors.js';
import type { Worker } from '../../src/worker/worker.js';
import { createTestDatabase, startWorker, waitFor, type TestDatabase } from '../helpers/db.js';
import { createSumsTable, insertSums, registerSums, SUMS_INPUTS, SUMS_OUTPUTS } from '../helpers/sums.js';

/**
 * Issue 15, "any role disturbs pgscore": no role outside pgscore's can take the locks that elect
 * a leader or wake the worker, and a NOTIFY on pgscore_alerts that pgscore did not send can be
 * told from one it did. pgscore used advisory locks before (any role may take any key): holding
 * (1885827939, 4) silenced alerts, (1885827940, id) delayed a schedule, and (1885827939, 1)
 * in shared mode made the idle worker poll hot.
 */
describe('locks and channels a role outside pgscore cannot disturb', () => {
  const suffix = randomBytes(3).toString('hex');
  const OUTSIDER = `outsider_${suffix}`;
  const ADMIN = `lockadmin_${suffix}`;
  const PASSWORD = 'outsider-pw';
  let db: TestDatabase;
  let outsider: pg.Client;
  let admin: pg.Client;

  const as = (role: string) => {
    const url = new URL(db.url);
    url.username = role;
    url.password = PASSWORD;
    return url.toString();
  };
  /** Transactions committed in the test database so far (all sessions). */
  const commits = async () => {
    const [row] = await db.sql<{ n: string }>('SELECT xact_commit AS n FROM pg_stat_database WHERE datname = current_database()');
    return Number(row!.n);
  };

  beforeAll(async () => {
    db = await createTestDatabase();
    await db.sql(`CREATE ROLE ${OUTSIDER} LOGIN PASSWORD '${PASSWORD}'`);
    await db.sql(`CREATE ROLE ${ADMIN} LOGIN PASSWORD '${PASSWORD}' IN ROLE pgscore_admin`);
    await registerSums(db);
    outsider = new pg.Client({ connectionString: as(OUTSIDER) });
    admin = new pg.Client({ connectionString: as(ADMIN) });
    await outsider.connect();
    await admin.connect();
    // Every advisory key pgscore ever used, held by a role with no rights on ml.
    await outsider.query(`SELECT pg_advisory_lock_shared(1885827939, 1), pg_advisory_lock(1885827939, 2),
                                 pg_advisory_lock(1885827939, 3), pg_advisory_lock(1885827939, 4),
                                 pg_advisory_lock(hashtext('pgscore.model.sums'))`);
    await outsider.query('SELECT pg_advisory_lock(1885827940, g) FROM generate_series(1, 50) g');
  });
  afterAll(async () => {
    await outsider?.end();
    await admin?.end();
    await db?.drop();
    await db?.sql(`DROP ROLE IF EXISTS ${OUTSIDER}`).catch(() => undefined);
  });

  it('a role outside pgscore cannot lock the wake-up table nor a leader row; an admin cannot either', async () => {
    await expect(outsider.query('BEGIN; LOCK TABLE ml._wake IN SHARE MODE NOWAIT')).rejects.toMatchObject({
      code: '42501',
      message: 'permission denied for schema ml',
    });
    await outsider.query('ROLLBACK');
    await expect(outsider.query('SELECT * FROM ml._leaders FOR UPDATE')).rejects.toMatchObject({ code: '42501' });
    await admin.query('BEGIN');
    try {
      await expect(admin.query('LOCK TABLE ml._wake IN ROW EXCLUSIVE MODE NOWAIT')).rejects.toMatchObject({
        code: '42501',
        message: 'permission denied for table _wake',
      });
    } finally {
      await admin.query('ROLLBACK');
    }
    await expect(admin.query('SELECT * FROM ml._leaders FOR UPDATE')).rejects.toMatchObject({
      code: '42501',
      message: 'permission denied for table _leaders',
    });
    // What an admin may take (ACCESS SHARE, by reading) conflicts with none of pgscore's modes.
    await admin.query('BEGIN');
    try {
      await admin.query('SELECT * FROM ml._wake');
      await admin.query('SELECT * FROM ml._leaders');
      const [check] = await db.sql<{ n: string }>(`SELECT count(*) AS n FROM ml._check_alerts(false)`);
      expect(Number(check!.n)).toBeGreaterThanOrEqual(0);
      const [locked] = await db.sql<{ ok: boolean }>(`SELECT ml._lock_task('alerts', false) AS ok`);
      expect(locked!.ok).toBe(true);
    } finally {
      await admin.query('ROLLBACK');
    }
  });

  it('alerts are raised while the outsider holds the old alerts key (1885827939, 4)', async () => {
    await createSumsTable(db, 'alerting');
    await db.sql(`SELECT ml.deploy('alerting', 'alerting', 'sums', $1, $2)`, [SUMS_INPUTS, SUMS_OUTPUTS]);
    await db.sql('ALTER TABLE alerting DROP COLUMN tag');
    const changes = await db.sql<{ deployment: string; alert: string; state: string }>(
      'SELECT deployment, alert, state FROM ml._check_alerts(false)');
    expect(changes).toContainEqual({ deployment: 'alerting', alert: 'invalid', state: 'raised' });
    expect(await db.sql(`SELECT deployment, alert FROM ml.alerts WHERE deployment = 'alerting'`))
      .toEqual([{ deployment: 'alerting', alert: 'invalid' }]);
  });

  it('a scheduled run starts while the outsider holds the old schedule key (1885827940, id)', async () => {
    await createSumsTable(db, 'nightly');
    await db.sql(`SELECT ml.deploy('nightly', 'nightly', 'sums', $1, $2, '{"mode": "batch", "schedule": "0 2 * * *"}')`,
      [SUMS_INPUTS, SUMS_OUTPUTS]);
    const [{ id }] = await db.sql<{ id: number }>(`SELECT id FROM ml._deployments WHERE name = 'nightly'`) as [{ id: number }];
    expect(id).toBeLessThanOrEqual(50);
    const [started] = await db.sql<{ run: string | null }>(`SELECT ml._start_scheduled_run($1, now()) AS run`, [id]);
    expect(started!.run).not.toBeNull();
    expect(await db.sql(`SELECT kind, state FROM ml.runs WHERE deployment = 'nightly'`)).toEqual([{ kind: 'schedule', state: 'finished' }]);
  });

  it('migrate, while the outsider holds its lock (1885827939, 2), stops waiting and names the session', async () => {
    const client = new pg.Client({ connectionString: db.url });
    await client.connect();
    try {
      const started = performance.now();
      const failure = await migrate(client, { lockWaitMs: 500 }).then(() => undefined, (error: unknown) => error as PgscoreError);
      expect(performance.now() - started).toBeLessThan(5_000);
      expect(failure?.message).toMatch(new RegExp(`holds pgscore's migrate lock .*: session \\d+ of role "${OUTSIDER}"`));
      expect(failure?.hint).toMatch(/pg_terminate_backend\(\d+\)/);
    } finally {
      await client.end();
    }
  });

  it('a model is registered and promoted while the outsider holds its old key', async () => {
    const [row] = await db.sql<{ v: number }>(`SELECT ml.register_model('sums', (SELECT onnx FROM ml._models WHERE name = 'sums' AND version = 1)) AS v`);
    expect(row!.v).toBe(3);
    await db.sql(`SELECT ml.promote('sums', 2)`);
    expect(await db.sql(`SELECT version FROM ml._aliases WHERE model = 'sums' AND alias = 'production'`)).toEqual([{ version: 2 }]);
    await db.sql(`SELECT ml.promote('sums', 1)`);
  });

  describe('with a worker running', () => {
    let worker: Worker;
    beforeAll(async () => {
      await createSumsTable(db, 'scored');
      await db.sql(`SELECT ml.deploy('scored', 'scored', 'sums', $1, $2)`, [SUMS_INPUTS, SUMS_OUTPUTS]);
      worker = await startWorker(db, { pollIntervalMs: 1000 });
    });
    afterAll(async () => {
      await worker?.stop();
    });

    it('the idle worker does not poll hot while the outsider holds the old idle key shared, and still wakes on a write', async () => {
      // Let the worker drain its first look and go to sleep.
      await insertSums(db, 'scored', 1, 1);
      await waitFor(async () => (await db.sql(`SELECT 1 FROM scored WHERE total IS NOT NULL`)).length === 1, 'the first row scored');
      const before = await commits();
      await new Promise((resolve) => setTimeout(resolve, 5000));
      const idle = (await commits()) - before;
      // Before: 2,342 transactions in 5 s. Now: the idle lock's poll and the upkeep's timers.
      expect(idle).toBeLessThan(150);

      const wrote = performance.now();
      await insertSums(db, 'scored', 2, 2);
      await waitFor(async () => (await db.sql(`SELECT 1 FROM scored WHERE id = 2 AND total IS NOT NULL`)).length === 1, 'the second row scored');
      // Woken by the NOTIFY, not found by the next poll a second later.
      expect(performance.now() - wrote).toBeLessThan(900);
    });
  });

  it('an alert on pgscore_alerts names its row of ml.alert_events; a forged one names none', async () => {
    const listener = new pg.Client({ connectionString: db.url });
    await listener.connect();
    const payloads: string[] = [];
    listener.on('notification', (n) => n.channel === 'pgscore_alerts' && payloads.push(n.payload ?? ''));
    await listener.query('LISTEN pgscore_alerts');
    try {
      // Any role may NOTIFY on any channel, with any payload.
      await outsider.query(`SELECT pg_notify('pgscore_alerts', '{"id": 1, "deployment": "scored", "alert": "invalid", "state": "raised"}')`);
      await outsider.query(`SELECT pg_notify('pgscore_alerts', '{"id": 999999, "deployment": "scored", "alert": "invalid", "state": "raised"}')`);
      await db.sql('ALTER TABLE scored DROP COLUMN tag');
      await db.sql('SELECT ml._check_alerts(false)');
      await waitFor(async () => payloads.length >= 3, 'three notifications');

      // What a listener does: read the row the payload names, and compare.
      const verified = async (payload: string) => {
        const claimed = JSON.parse(payload) as { id?: unknown; deployment?: unknown; alert?: unknown; state?: unknown };
        if (typeof claimed.id !== 'number') return false;
        const rows = await admin.query('SELECT deployment, alert, state FROM ml.alert_events WHERE id = $1', [claimed.id]);
        const row = rows.rows[0] as { deployment: string; alert: string; state: string } | undefined;
        return row !== undefined && row.deployment === claimed.deployment && row.alert === claimed.alert && row.state === claimed.state;
      };
      const results = await Promise.all(payloads.map(verified));
      expect(results).toEqual([false, false, true]);
      const genuine = JSON.parse(payloads[2]!) as { id: number };
      expect(await db.sql(`SELECT deployment, alert, id FROM ml.alerts WHERE deployment = 'scored'`))
        .toEqual([{ deployment: 'scored', alert: 'invalid', id: String(genuine.id) }]);
    } finally {
      await listener.end();
    }
  });
});
