import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { connectionAs } from '../../src/db/roles.js';
import { createTestDatabase, push, type TestDatabase } from '../helpers/db.js';

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

    const [{ id }] = await db.sql<{ id: number }>(`SELECT id FROM ml._deployments WHERE name = 'nightly'`);
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
