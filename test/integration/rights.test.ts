import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { connectionAs } from '../../src/db/roles.js';
import { pino } from 'pino';
import { Worker } from '../../src/worker/worker.js';
import { createTestDatabase, pending, push, startWorker, waitFor, WORKER_DEFAULTS, type TestDatabase } from '../helpers/db.js';
import { WORKER_ROLE } from '../helpers/global-postgres.js';

// Issue 15, class 3: one tenant must not reach another through pgscore. Roles belong to the whole
// server, which other test files share: the names carry a suffix.
const SUFFIX = randomBytes(3).toString('hex');
const PASSWORD = 'pgscore';
/** A member of pgscore_admin that owns the deployed tables. */
const OWNER = `tenant_${SUFFIX}`;
/** Another member of pgscore_admin: no rights on the owner's tables. */
const ADMIN = `neighbour_${SUFFIX}`;

const IRIS_INPUTS = '{"X": ["sepal_length", "sepal_width", "petal_length", "petal_width"]}';
const STAFF = `CREATE TABLE staff (id int PRIMARY KEY, sepal_length real, sepal_width real, petal_length real, petal_width real,
                                   salary int, secret text)`;

async function serverAdmin(statements: readonly string[]): Promise<void> {
  const client = new pg.Client({ connectionString: inject('adminUrl') });
  await client.connect();
  try {
    for (const statement of statements) await client.query(statement);
  } finally {
    await client.end();
  }
}

beforeAll(async () => {
  await serverAdmin([
    `CREATE ROLE ${OWNER} LOGIN PASSWORD '${PASSWORD}' IN ROLE pgscore_admin`,
    `CREATE ROLE ${ADMIN} LOGIN PASSWORD '${PASSWORD}' IN ROLE pgscore_admin`,
  ]);
});
afterAll(async () => {
  await serverAdmin([OWNER, ADMIN].map((role) => `DROP ROLE IF EXISTS ${role}`));
});

interface Failure {
  readonly code: string | undefined;
  readonly message: string;
  readonly hint: string | undefined;
}

async function failure(statement: Promise<unknown>): Promise<Failure> {
  try {
    await statement;
  } catch (error) {
    const e = error as pg.DatabaseError;
    return { code: e.code, message: e.message, hint: e.hint };
  }
  throw new Error('the statement succeeded');
}

/** A session of a role in a test database. */
async function login(db: TestDatabase, role: string): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: connectionAs(db.url, role, PASSWORD) });
  await client.connect();
  return client;
}

const HINT = 'Run it as the table\'s owner, or as a member of the owning role (GRANT <owner> TO <you>).';
const notOwner = (action: string) => ({ code: '42501', message: `only the owner of public.staff (role ${OWNER}) can ${action}`, hint: HINT });

describe('only the owner runs, changes or removes a deployment', () => {
  let db: TestDatabase;
  let owner: pg.Client;
  let admin: pg.Client;

  beforeAll(async () => {
    db = await createTestDatabase();
    await push(db, 'iris', 'iris.onnx');
    await push(db, 'iris', 'iris.onnx');
    await db.sql(STAFF);
    await db.sql(`INSERT INTO staff SELECT i, 5.1, 3.5, 1.4, 0.2, i * 1000, 'pw' || i FROM generate_series(1, 10) i`);
    await db.sql(`ALTER TABLE staff OWNER TO ${OWNER}`);
    owner = await login(db, OWNER);
    admin = await login(db, ADMIN);
    await owner.query(`SELECT ml.deploy('staff', 'staff', 'iris', $1, '{"species": "label"}', '{"backfill": false, "shadow": "iris@2"}')`,
      [IRIS_INPUTS]);
  });
  afterAll(async () => {
    await owner?.end();
    await admin?.end();
    await db?.drop();
  });

  it.each([
    ['ml.backfill', `SELECT ml.backfill('staff')`, 'backfill "staff"'],
    ['ml.backfill with a filter', `SELECT ml.backfill('staff', 'salary > 5000')`, 'backfill "staff"'],
    ['ml.run_now', `SELECT ml.run_now('staff')`, 'run "staff"'],
    ['ml.retry', `SELECT ml.retry('staff')`, 'retry "staff"'],
    ['ml.undeploy', `SELECT ml.undeploy('staff')`, 'undeploy "staff"'],
    ['ml.split', `SELECT ml.split('staff', '{"iris@1": 50, "iris@2": 50}')`, 'deploy on it'],
    ['ml.promote_shadow', `SELECT ml.promote_shadow('staff')`, 'deploy on it'],
  ])('an admin who does not own the table is refused %s, with a hint', async (_what, sql, action) => {
    const runs = await db.sql(`SELECT count(*) FROM ml._runs`);
    expect(await failure(admin.query(sql))).toEqual(notOwner(action));
    // Nothing happened: no run, the deployment still there and active.
    expect(await db.sql(`SELECT count(*) FROM ml._runs`)).toEqual(runs);
    expect(await db.sql(`SELECT status FROM ml._deployments WHERE name = 'staff'`)).toEqual([{ status: 'active' }]);
  });

  it('the check follows SET ROLE: a superuser acting as the admin is refused too', async () => {
    const session = new pg.Client({ connectionString: db.url });
    await session.connect();
    try {
      await session.query(`SET ROLE ${ADMIN}`);
      expect(await failure(session.query(`SELECT ml.undeploy('staff')`))).toEqual(notOwner('undeploy "staff"'));
    } finally {
      await session.end();
    }
  });

  it('the owner may backfill, run, retry, split and undeploy', async () => {
    expect((await owner.query(`SELECT ml.backfill('staff') AS n`)).rows).toEqual([{ n: '10' }]);
    expect((await owner.query(`SELECT ml.backfill('staff', 'salary > 5000') AS n`)).rows).toEqual([{ n: '5' }]);
    expect((await owner.query(`SELECT ml.run_now('staff') AS run`)).rows[0].run).toMatch(/^\d+$/);
    expect((await owner.query(`SELECT ml.retry('staff') AS n`)).rows).toEqual([{ n: '0' }]);
    await owner.query(`SELECT ml.split('staff', '{"iris@1": 50, "iris@2": 50}')`);
    await owner.query(`SELECT ml.undeploy('staff')`);
    expect(await db.sql(`SELECT count(*)::int AS n FROM ml._deployments WHERE name = 'staff'`)).toEqual([{ n: 0 }]);
  });
});

describe('filters run with the rights of the table owner, never with pgscore\'s', () => {
  let db: TestDatabase;
  let owner: pg.Client;
  let admin: pg.Client;

  beforeAll(async () => {
    db = await createTestDatabase();
    await push(db, 'iris', 'iris.onnx');
    await db.sql(STAFF);
    await db.sql(`INSERT INTO staff SELECT i, 5.1, 3.5, 1.4, 0.2, i * 1000, 'pw' || i FROM generate_series(1, 10) i`);
    await db.sql(`ALTER TABLE staff OWNER TO ${OWNER}`);
    owner = await login(db, OWNER);
    admin = await login(db, ADMIN);
    await owner.query(`SELECT ml.deploy('staff', 'staff', 'iris', $1, '{"species": "label"}', '{"backfill": false}')`, [IRIS_INPUTS]);
  });
  afterAll(async () => {
    await owner?.end();
    await admin?.end();
    await db?.drop();
  });

  it("an admin with no SELECT on the table learns nothing of its rows from ml.backfill's counts", async () => {
    expect((await admin.query(`SELECT has_table_privilege('staff', 'SELECT') AS may`)).rows).toEqual([{ may: false }]);
    for (const filter of ['salary > 5000', `secret like 'pw7%'`]) {
      expect(await failure(admin.query(`SELECT ml.backfill('staff', $1)`, [filter]))).toEqual(notOwner('backfill "staff"'));
    }
  });

  it("a backfill filter runs as the owner: has_table_privilege('pg_authid', 'SELECT') is false in it", async () => {
    expect((await owner.query(`SELECT ml.backfill('staff', $1) AS n`, [`has_table_privilege('pg_authid', 'SELECT')`])).rows)
      .toEqual([{ n: '0' }]);
    expect((await owner.query(`SELECT ml.backfill('staff', $1) AS n`, [`current_user = '${OWNER}'`])).rows).toEqual([{ n: '10' }]);
    // The same filter as the superuser who owns ml: still the table owner's rights.
    expect(await db.sql(`SELECT ml.backfill('staff', $1) AS n`, [`has_table_privilege('pg_authid', 'SELECT')`])).toEqual([{ n: '0' }]);
    expect(await db.sql(`SELECT ml.backfill('staff', $1) AS n`, [`salary > 5000 AND current_user = '${OWNER}'`])).toEqual([{ n: '5' }]);
    // Nothing is left behind in the session.
    expect((await owner.query(`SELECT count(*)::int AS n FROM pg_proc WHERE proname = 'pgscore_as_owner'`)).rows).toEqual([{ n: 0 }]);
  });

  it("a deployment's filter option runs as the owner in ml.run_now and in the worker's scheduled runs", async () => {
    await owner.query(`SELECT ml.deploy('nightly', 'staff', 'iris', $1, '{"nightly_species": "label"}', $2)`,
      [IRIS_INPUTS, JSON.stringify({ mode: 'batch', schedule: '0 2 * * *', filter: `has_table_privilege('pg_authid', 'SELECT') OR current_user <> '${OWNER}'` })]);
    const run = (await owner.query(`SELECT ml.run_now('nightly') AS run`)).rows[0].run as string;
    expect(await db.sql(`SELECT kind, rows FROM ml._runs WHERE id = $1`, [run])).toEqual([{ kind: 'manual', rows: '0' }]);

    const id = (await db.sql<{ id: number }>(`SELECT id FROM ml._deployments WHERE name = 'nightly'`))[0]!.id;
    const worker = new pg.Client({ connectionString: db.workerUrl });
    await worker.connect();
    try {
      const scheduled = (await worker.query(`SELECT ml._start_scheduled_run($1, '2026-01-01 02:00+00') AS run`, [id])).rows[0].run as string;
      expect(await db.sql(`SELECT kind, rows FROM ml._runs WHERE id = $1`, [scheduled])).toEqual([{ kind: 'schedule', rows: '0' }]);
    } finally {
      await worker.end();
    }
  });
});

describe('what a deployment logged is shown only to roles that may read its table', () => {
  let db: TestDatabase;
  let owner: pg.Client;
  let admin: pg.Client;
  let worker: pg.Client;
  let queue: string;

  /** Rows of each surface that concern the deployment "staff", as a session sees them. */
  async function seen(session: pg.Client): Promise<Record<string, number>> {
    const count = async (sql: string) => Number((await session.query(sql)).rows[0].n);
    const page = (await session.query(`SELECT ml._status_page() AS page`)).rows[0].page as { deployments: { deployment: string }[] };
    return {
      predictions: await count(`SELECT count(*) AS n FROM ml._predictions p JOIN ml._deployments d ON d.id = p.deployment_id WHERE d.name = 'staff'`),
      prediction_batches: await count(`SELECT count(*) AS n FROM ml._prediction_batches b JOIN ml._deployments d ON d.id = b.deployment_id WHERE d.name = 'staff'`),
      baselines: await count(`SELECT count(*) AS n FROM ml._baselines WHERE model = 'iris'`),
      drift_counts: await count(`SELECT count(*) AS n FROM ml._drift_counts c JOIN ml._deployments d ON d.id = c.deployment_id WHERE d.name = 'staff'`),
      drift: await count(`SELECT count(*) AS n FROM ml.drift WHERE deployment = 'staff'`),
      drift_function: await count(`SELECT count(*) AS n FROM ml._drift() WHERE deployment = 'staff'`),
      performance: await count(`SELECT count(*) AS n FROM ml.performance WHERE deployment = 'staff'`),
      compare: await count(`SELECT count(*) AS n FROM ml.compare WHERE deployment = 'staff'`),
      compare_function: await count(`SELECT count(*) AS n FROM ml.compare('1 day') WHERE deployment = 'staff'`),
      errors: await count(`SELECT count(*) AS n FROM ml.errors WHERE deployment = 'staff'`),
      dead_letters: await count(`SELECT count(*) AS n FROM ml._dead_letters e JOIN ml._deployments d ON d.id = e.deployment_id WHERE d.name = 'staff'`),
      runs: await count(`SELECT count(*) AS n FROM ml.runs WHERE deployment = 'staff'`),
      runs_table: await count(`SELECT count(*) AS n FROM ml._runs WHERE deployment = 'staff'`),
      status_page: page.deployments.filter((d) => d.deployment === 'staff').length,
    };
  }

  beforeAll(async () => {
    db = await createTestDatabase();
    await push(db, 'iris', 'iris.onnx');
    await db.sql(`SELECT ml.configure('baseline_rows', '10')`);
    await db.sql(STAFF.replace('secret text', 'secret text, truth text'));
    await db.sql(`INSERT INTO staff SELECT i, 5.1, 3.5, 1.4, 0.2, i * 1000, 'pw' || i FROM generate_series(1, 30) i`);
    await db.sql(`INSERT INTO staff (id, salary) VALUES (31, 31000)`);  // no inputs: a dead letter
    await db.sql(`ALTER TABLE staff OWNER TO ${OWNER}`);
    owner = await login(db, OWNER);
    admin = await login(db, ADMIN);
    worker = new pg.Client({ connectionString: db.workerUrl });
    await worker.connect();
    await owner.query(`SELECT ml.deploy('staff', 'staff', 'iris', $1, '{"species": "label"}', '{"label": "truth"}')`, [IRIS_INPUTS]);
    queue = `ml._queue_${(await db.sql<{ id: number }>(`SELECT id FROM ml._deployments WHERE name = 'staff'`))[0]!.id}`;
    const scoring = await startWorker(db);
    try {
      await waitFor(async () => (await pending(db, 'staff')) === 0, 'the rows scored');
      // Drift counts the rows scored after the baseline the first rows gave.
      await waitFor(async () => (await db.sql(`SELECT 1 FROM ml._baselines WHERE model = 'iris'`)).length > 0, 'the baseline');
      await db.sql(`INSERT INTO staff SELECT i, 6.7, 3.0, 5.2, 2.3, i * 1000, 'pw' || i FROM generate_series(32, 60) i`);
      await waitFor(async () => (await pending(db, 'staff')) === 0, 'the later rows scored');
      await db.sql(`UPDATE staff SET truth = 'setosa'`);
      await waitFor(async () => (await db.sql(`SELECT 1 FROM ml.drift WHERE deployment = 'staff'`)).length > 0, 'drift counted');
      await waitFor(async () => (await db.sql(`SELECT 1 FROM ml.performance WHERE deployment = 'staff'`)).length > 0, 'performance measured');
    } finally {
      await scoring.stop();
    }
  }, 120_000);
  afterAll(async () => {
    await owner?.end();
    await admin?.end();
    await worker?.end();
    await db?.drop();
  });

  it('the owner sees its predictions, baselines, drift, performance, comparisons, dead letters, runs and status page', async () => {
    const rows = await seen(owner);
    expect(Object.entries(rows).filter(([, n]) => n === 0).map(([surface]) => surface)).toEqual([]);
  });

  it('an admin without SELECT on the table sees none of it', async () => {
    expect((await admin.query(`SELECT has_table_privilege('staff', 'SELECT') AS may`)).rows).toEqual([{ may: false }]);
    const rows = await seen(admin);
    expect(rows).toEqual(Object.fromEntries(Object.keys(rows).map((surface) => [surface, 0])));
    // Nor the keys waiting in its queue, nor a day of the log read directly.
    expect(await failure(admin.query(`SELECT * FROM ${queue}`))).toMatchObject({ code: '42501' });
    const [partition] = await db.sql<{ name: string }>(
      `SELECT c.oid::regclass::text AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'ml._prediction_batches'::regclass LIMIT 1`);
    expect(await failure(admin.query(`SELECT * FROM ${partition!.name}`))).toMatchObject({ code: '42501' });
  });

  it('once granted SELECT on the table, the admin sees it all; the worker role sees it all', async () => {
    await db.sql(`GRANT SELECT ON staff TO ${ADMIN}`);
    try {
      const rows = await seen(admin);
      expect(Object.entries(rows).filter(([, n]) => n === 0).map(([surface]) => surface)).toEqual([]);
    } finally {
      await db.sql(`REVOKE SELECT ON staff FROM ${ADMIN}`);
    }
    const page = (await worker.query(`SELECT ml._status_page() AS page`)).rows[0].page as { deployments: { deployment: string }[] };
    expect(page.deployments.map((d) => d.deployment)).toEqual(['staff']);
    expect(Number((await worker.query(`SELECT count(*) AS n FROM ml.drift WHERE deployment = 'staff'`)).rows[0].n)).toBeGreaterThan(0);
    expect(WORKER_ROLE).toBeTruthy();
  });
});

describe('ml.undeploy during a batch or a run', () => {
  let db: TestDatabase;

  beforeAll(async () => {
    db = await createTestDatabase();
    await push(db, 'iris', 'iris.onnx');
  });
  afterAll(async () => {
    await db?.drop();
  });

  async function waitingBackend(pid: number): Promise<boolean> {
    const [row] = await db.sql<{ waiting: boolean }>(
      `SELECT wait_event_type = 'Lock' OR wait_event = 'PgSleep' AS waiting FROM pg_stat_activity WHERE pid = $1`, [pid]);
    return row?.waiting ?? false;
  }

  it('an undeploy that meets a batch holding its queue waits for it: neither deadlocks', async () => {
    await db.sql(`CREATE TABLE busy (id int PRIMARY KEY, sepal_length real, sepal_width real, petal_length real, petal_width real)`);
    await db.sql(`SELECT ml.deploy('busy', 'busy', 'iris', $1, '{"species": "label"}')`, [IRIS_INPUTS]);
    await db.sql(`INSERT INTO busy SELECT i, 5.1, 3.5, 1.4, 0.2 FROM generate_series(1, 10) i`);
    const id = (await db.sql<{ id: number }>(`SELECT id FROM ml._deployments WHERE name = 'busy'`))[0]!.id;

    // A worker's batch, as the worker runs it: claim, read, then write back with its statistics.
    const batch = new pg.Client({ connectionString: db.workerUrl });
    const undeployer = new pg.Client({ connectionString: db.url });
    await batch.connect();
    await undeployer.connect();
    try {
      await batch.query(`BEGIN`);
      await batch.query(`SET LOCAL pgscore.writeback = 'on'`);
      const claimed = await batch.query(`SELECT pgscore_seq FROM ml._queue_${id} FOR UPDATE SKIP LOCKED`);
      expect(claimed.rowCount).toBeGreaterThan(0);
      await batch.query(`SELECT id, sepal_length FROM busy`);

      const pid = (await undeployer.query(`SELECT pg_backend_pid() AS pid`)).rows[0].pid as number;
      const undeploy = undeployer.query(`SELECT ml.undeploy('busy')`).then(() => undefined, (error: Error) => error.message);
      await waitFor(() => waitingBackend(pid), 'the undeploy waiting for the batch');

      const written = batch.query(`UPDATE busy SET species = 'setosa'`)
        .then(() => batch.query(`INSERT INTO ml._batches (deployment_id, scored, dead, latency_hist) VALUES ($1, 10, 0, '{10}')`, [id]))
        .then(() => batch.query(`DELETE FROM ml._queue_${id}`))
        .then(() => batch.query(`COMMIT`))
        .then(() => undefined, (error: Error) => error.message);
      expect({ batch: await written, undeploy: await undeploy }).toEqual({ batch: undefined, undeploy: undefined });
    } finally {
      await batch.end();
      await undeployer.end();
    }
    expect(await db.sql(`SELECT count(*)::int AS n FROM busy WHERE species = 'setosa'`)).toEqual([{ n: 10 }]);
    expect(await db.sql(`SELECT count(*)::int AS n FROM ml._deployments WHERE name = 'busy'`)).toEqual([{ n: 0 }]);
  });

  it('a worker whose deployment is undeployed under its batches lets it go without an error in its log', async () => {
    await db.sql(`CREATE TABLE churning (id int PRIMARY KEY, sepal_length real, sepal_width real, petal_length real, petal_width real)`);
    await db.sql(`SELECT ml.deploy('churning', 'churning', 'iris', $1, '{"species": "label"}')`, [IRIS_INPUTS]);
    await db.sql(`INSERT INTO churning SELECT i, 5.1, 3.5, 1.4, 0.2 FROM generate_series(1, 200000) i`);
    const lines: { level: number; msg: string }[] = [];
    const log = pino({ level: 'debug' }, { write: (line: string) => void lines.push(JSON.parse(line)) });
    const worker = new Worker(db.workerUrl, { ...WORKER_DEFAULTS, batchSize: 500 }, log);
    const batches: unknown[] = [];
    worker.on('batch', (batch) => batches.push(batch));
    await worker.start();
    try {
      await waitFor(async () => batches.length >= 2, 'batches under way');
      await db.sql(`SELECT ml.undeploy('churning')`);
      await waitFor(async () => worker.deployments.length === 0, 'the worker letting the deployment go');
    } finally {
      await worker.stop();
    }
    expect(lines.filter((line) => line.level >= 50).map((line) => line.msg)).toEqual([]);
    expect(await db.sql(`SELECT count(*)::int AS n FROM ml._deployments WHERE name = 'churning'`)).toEqual([{ n: 0 }]);
  });
});
