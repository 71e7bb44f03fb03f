import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { connectionAs } from '../../src/db/roles.js';
import { exited, pgscore, startPgscore } from '../helpers/cli.js';
import { createTestDatabase, pending, push, startWorker, waitFor, type TestDatabase } from '../helpers/db.js';
import { WORKER_ROLE } from '../helpers/global-postgres.js';

// Roles belong to the whole server, which other test files share: the names carry a suffix.
const SUFFIX = randomBytes(3).toString('hex');
const PASSWORD = 'pgscore';
/** An application: writes a deployed table, has no rights on ml. */
const APP = `app_${SUFFIX}`;
/** An unrelated, hostile login role that may create objects in public. */
const OTHER = `other_${SUFFIX}`;
/** A non-superuser that owns a table the DBA deploys on. */
const OWNER = `owner_${SUFFIX}`;
/** A member of pgscore_admin: deploys and operates, is no superuser. */
const ADMIN = `admin_${SUFFIX}`;
/** A hostile member of pgscore_admin. */
const MALLORY = `mallory_${SUFFIX}`;

const IRIS_INPUTS = '{"X": ["sepal_length", "sepal_width", "petal_length", "petal_width"]}';
const FLOWERS = `CREATE TABLE flowers (id int PRIMARY KEY, sepal_length real, sepal_width real, petal_length real, petal_width real,
                                       note text)`;
const SETOSA = [5.1, 3.5, 1.4, 0.2];
const VIRGINICA = [6.7, 3.0, 5.2, 2.3];

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
    `CREATE ROLE ${APP} LOGIN PASSWORD '${PASSWORD}'`,
    `CREATE ROLE ${OTHER} LOGIN PASSWORD '${PASSWORD}'`,
    `CREATE ROLE ${OWNER} LOGIN PASSWORD '${PASSWORD}'`,
    `CREATE ROLE ${ADMIN} LOGIN PASSWORD '${PASSWORD}' IN ROLE pgscore_admin`,
    `CREATE ROLE ${MALLORY} LOGIN PASSWORD '${PASSWORD}' IN ROLE pgscore_admin`,
  ]);
});
afterAll(async () => {
  // Every database of this file is dropped by now, and with it whatever the roles owned there.
  await serverAdmin([APP, OTHER, OWNER, ADMIN, MALLORY].map((role) => `DROP ROLE IF EXISTS ${role}`));
});

async function login(db: TestDatabase, role: string): Promise<pg.Client> {
  const url = role === WORKER_ROLE ? db.workerUrl : connectionAs(db.url, role, PASSWORD);
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  return client;
}

/** Runs statements as a role, on a connection of its own. */
async function as<T>(db: TestDatabase, role: string, body: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = await login(db, role);
  try {
    return await body(client);
  } finally {
    await client.end();
  }
}

interface Failure {
  readonly code: string | undefined;
  readonly message: string;
}

/** The SQLSTATE and message of the error a statement fails with, or undefined when it succeeds. */
async function errorOf(statement: Promise<unknown>): Promise<Failure | undefined> {
  try {
    await statement;
    return undefined;
  } catch (error) {
    return { code: (error as pg.DatabaseError).code, message: (error as Error).message };
  }
}

async function failure(statement: Promise<unknown>): Promise<Failure> {
  const error = await errorOf(statement);
  if (!error) throw new Error('the statement succeeded');
  return error;
}

const denied = (object: string) => ({ code: '42501', message: `permission denied for ${object}` });

const isSuperuser = async (db: TestDatabase, role: string) =>
  (await db.sql<{ rolsuper: boolean }>('SELECT rolsuper FROM pg_roles WHERE rolname = $1', [role]))[0]?.rolsuper;

describe('who may do what in ml', () => {
  let db: TestDatabase;
  const ctx = { id: 0, plan: '', signature: '' };
  const sessions = new Map<string, pg.Client>();

  beforeAll(async () => {
    db = await createTestDatabase();
    await push(db, 'iris', 'iris.onnx');
    await push(db, 'iris', 'iris.onnx');
    await db.sql(`SELECT ml.promote('iris', 2)`);
    await db.sql(FLOWERS);
    await db.sql(`SELECT ml.deploy('flowers', 'flowers', 'iris', $1, '{"species": "label"}')`, [IRIS_INPUTS]);
    await db.sql(`GRANT SELECT, INSERT, UPDATE ON flowers TO ${APP}`);
    await db.sql(`GRANT CREATE ON SCHEMA public TO ${OTHER}`);
    await db.sql(FLOWERS.replace('TABLE flowers', 'TABLE admin_flowers'));
    await db.sql(`ALTER TABLE admin_flowers OWNER TO ${ADMIN}`);
    const [deployment] = await db.sql<{ id: number; plan: unknown }>(`SELECT id, plan FROM ml._deployments WHERE name = 'flowers'`);
    const [model] = await db.sql<{ signature: unknown }>(`SELECT signature FROM ml._models WHERE name = 'iris' AND version = 1`);
    ctx.id = deployment!.id;
    ctx.plan = JSON.stringify(deployment!.plan);
    ctx.signature = JSON.stringify(model!.signature);
    for (const role of [APP, OTHER, WORKER_ROLE, ADMIN]) sessions.set(role, await login(db, role));
  });
  afterAll(async () => {
    for (const session of sessions.values()) await session.end();
    await db?.drop();
  });

  /**
   * allowed-to-call: EXECUTE is granted; the call then fails for its own reason (no such deployment).
   * owner-only: EXECUTE is granted; the call is refused to an admin who does not own the table.
   */
  type Access = 'allowed' | 'allowed-to-call' | 'owner-only' | 'denied';
  interface Entry {
    readonly what: string;
    /** How a refusal names the object, e.g. "function _activate". */
    readonly object: () => string;
    readonly sql: () => string;
    readonly values?: () => unknown[];
    readonly worker: Access;
    readonly admin: Access;
  }
  const fn = (name: string) => () => `function ${name}`;
  const MATRIX: Entry[] = [
    { what: 'ml.register_model', object: fn('register_model'), sql: () => `SELECT ml.register_model('matrix', $1)`,
      values: () => [Buffer.from([0])], worker: 'denied', admin: 'allowed' },
    { what: 'ml.promote', object: fn('promote'), sql: () => `SELECT ml.promote('iris', 1)`, worker: 'denied', admin: 'allowed' },
    { what: 'ml.rollback', object: fn('rollback'), sql: () => `SELECT ml.rollback('iris')`, worker: 'denied', admin: 'allowed' },
    // Deploying also needs the table's ownership: the admin owns admin_flowers.
    { what: 'ml.deploy', object: fn('deploy'), sql: () => `SELECT ml.deploy('matrix', 'admin_flowers', 'iris', $1, '{"matrix_species": "label"}')`,
      values: () => [IRIS_INPUTS], worker: 'denied', admin: 'allowed' },
    { what: 'ml.undeploy', object: fn('undeploy'), sql: () => `SELECT ml.undeploy('flowers')`, worker: 'denied', admin: 'owner-only' },
    { what: 'ml.backfill', object: fn('backfill'), sql: () => `SELECT ml.backfill('flowers')`, worker: 'denied', admin: 'owner-only' },
    { what: 'ml.retry', object: fn('retry'), sql: () => `SELECT ml.retry('flowers')`, worker: 'denied', admin: 'owner-only' },
    { what: 'ml._enqueue_<id>()', object: () => `function _enqueue_${ctx.id}`, sql: () => `SELECT ml._enqueue_${ctx.id}()`,
      worker: 'denied', admin: 'denied' },
    { what: 'ml._activate', object: fn('_activate'), sql: () => `SELECT ml._activate(${ctx.id}, false)`, worker: 'denied', admin: 'denied' },
    { what: 'ml._install', object: fn('_install'), sql: () => `SELECT ml._install(${ctx.id}, 'flowers', 'flowers'::regclass, $1)`,
      values: () => [ctx.plan], worker: 'denied', admin: 'denied' },
    { what: 'ml._record_signature', object: fn('_record_signature'), sql: () => `SELECT ml._record_signature('iris', 1, $1, NULL)`,
      values: () => [ctx.signature], worker: 'allowed', admin: 'allowed' },
    { what: 'ml._recheck', object: fn('_recheck'), sql: () => `SELECT ml._recheck(${ctx.id})`, worker: 'allowed', admin: 'denied' },
    { what: 'ml._recheck_deployments', object: fn('_recheck_deployments'), sql: () => `SELECT ml._recheck_deployments()`,
      worker: 'allowed', admin: 'denied' },
    { what: 'ml._invalidate', object: fn('_invalidate'), sql: () => `SELECT ml._invalidate(${ctx.id}, 'matrix')`, worker: 'denied', admin: 'denied' },
    { what: 'ml._plan', object: fn('_plan'), sql: () => `SELECT ml._plan('flowers'::regclass, 'iris@1', $1, $2, '{"p": "label"}')`,
      values: () => [ctx.signature, IRIS_INPUTS], worker: 'denied', admin: 'denied' },
    // The lifecycle. ml.split and ml.promote_shadow also need the table's ownership (tested below).
    { what: 'ml.run_now', object: fn('run_now'), sql: () => `SELECT ml.run_now('flowers')`, worker: 'denied', admin: 'owner-only' },
    { what: 'ml.configure', object: fn('configure'), sql: () => `SELECT ml.configure('prediction_log_retention', '10 days')`,
      worker: 'denied', admin: 'allowed' },
    { what: 'ml.split', object: fn('split'), sql: () => `SELECT ml.split('nope', NULL)`, worker: 'denied', admin: 'allowed-to-call' },
    { what: 'ml.promote_shadow', object: fn('promote_shadow'), sql: () => `SELECT ml.promote_shadow('nope')`, worker: 'denied', admin: 'allowed-to-call' },
    { what: 'ml._start_run', object: fn('_start_run'), sql: () => `SELECT ml._start_run(${ctx.id}, 'manual')`, worker: 'denied', admin: 'denied' },
    { what: 'ml._start_scheduled_run', object: fn('_start_scheduled_run'), sql: () => `SELECT ml._start_scheduled_run(${ctx.id}, now())`,
      worker: 'allowed', admin: 'denied' },
    { what: 'ml._maintain', object: fn('_maintain'), sql: () => `SELECT ml._maintain()`, worker: 'allowed', admin: 'denied' },
    { what: 'ml._finish_runs', object: fn('_finish_runs'), sql: () => `SELECT ml._finish_runs()`, worker: 'allowed', admin: 'denied' },
    { what: 'ml._status_page', object: fn('_status_page'), sql: () => `SELECT ml._status_page()`, worker: 'allowed', admin: 'allowed' },
    { what: 'ml.set_baseline', object: fn('set_baseline'), sql: () => `SELECT ml.set_baseline('iris', 'SELECT 1 a, 2 b, 3 c, 4 d')`,
      worker: 'denied', admin: 'allowed' },
    { what: 'ml._check_alerts', object: fn('_check_alerts'), sql: () => `SELECT * FROM ml._check_alerts()`, worker: 'allowed', admin: 'denied' },
    { what: 'ml._store_baseline', object: fn('_store_baseline'),
      sql: () => `SELECT ml._store_baseline('iris', 1, 'first_rows', 1, '{}', NULL)`, worker: 'allowed', admin: 'allowed' },
    { what: 'SELECT ml.drift', object: () => 'view drift', sql: () => `SELECT * FROM ml.drift`, worker: 'allowed', admin: 'allowed' },
    { what: 'SELECT ml.performance', object: () => 'view performance', sql: () => `SELECT * FROM ml.performance`, worker: 'allowed', admin: 'allowed' },
    { what: 'SELECT ml.alerts', object: () => 'view alerts', sql: () => `SELECT * FROM ml.alerts`, worker: 'denied', admin: 'allowed' },
    { what: 'SELECT ml.runs', object: () => 'view runs', sql: () => `SELECT * FROM ml.runs`, worker: 'allowed', admin: 'allowed' },
    { what: 'SELECT ml.compare', object: () => 'view compare', sql: () => `SELECT * FROM ml.compare`, worker: 'denied', admin: 'allowed' },
    { what: 'SELECT ml.settings', object: () => 'view settings', sql: () => `SELECT * FROM ml.settings`, worker: 'denied', admin: 'allowed' },
    { what: 'SELECT ml._predictions', object: () => 'view _predictions', sql: () => `SELECT * FROM ml._predictions`,
      worker: 'denied', admin: 'allowed' },
    { what: 'SELECT ml._prediction_batches', object: () => 'table _prediction_batches', sql: () => `SELECT * FROM ml._prediction_batches`,
      worker: 'denied', admin: 'allowed' },
    { what: 'INSERT INTO ml._prediction_batches', object: () => 'table _prediction_batches',
      sql: () => `INSERT INTO ml._prediction_batches (deployment_id, row_keys, model, role) VALUES (${ctx.id}, '{"{}"}', 'forged@1', 'live')`,
      worker: 'allowed', admin: 'denied' },
    ...['models', 'deployments', 'status', 'errors'].map((view): Entry => ({
      what: `SELECT ml.${view}`, object: () => `view ${view}`, sql: () => `SELECT * FROM ml.${view}`, worker: 'allowed', admin: 'allowed' })),
    ...['_models', '_deployments', '_queue_<id>', '_dead_letters'].map((table): Entry => {
      const name = () => table.replace('<id>', String(ctx.id));
      // A queue holds the table's keys: admins see its size in ml.status only.
      return { what: `SELECT ml.${table}`, object: () => `table ${name()}`, sql: () => `SELECT * FROM ml.${name()}`, worker: 'allowed',
               admin: table === '_queue_<id>' ? 'denied' : 'allowed' };
    }),
  ];
  const ROLES = { app: APP, other: OTHER, worker: WORKER_ROLE, admin: ADMIN } as const;
  const CELLS = MATRIX.flatMap((entry) =>
    (Object.keys(ROLES) as (keyof typeof ROLES)[]).map((role) => {
      const access: Access = role === 'worker' || role === 'admin' ? entry[role] : 'denied';
      return [role, entry.what, access, entry] as const;
    }),
  );

  // Each attempt runs in a transaction that is rolled back: an allowed call changes nothing the next one sees.
  it.each(CELLS)('%s: %s is %s', async (role, _what, access, entry) => {
    const session = sessions.get(ROLES[role])!;
    await session.query('BEGIN');
    try {
      const attempt = session.query(entry.sql(), entry.values?.());
      if (access === 'allowed') {
        await attempt;
      } else if (access === 'allowed-to-call') {
        expect(await failure(attempt)).toMatchObject({ code: 'P0002' });
      } else if (access === 'owner-only') {
        expect(await failure(attempt)).toMatchObject({ code: '42501', message: expect.stringMatching(/^only the owner of public\.flowers /) });
      } else {
        // Applications and other roles do not even see into ml; members of a pgscore group are refused the object.
        expect(await failure(attempt)).toEqual(denied(role === 'app' || role === 'other' ? 'schema ml' : entry.object()));
      }
    } finally {
      await session.query('ROLLBACK');
    }
  });

  it('an admin who does not own the table cannot split it, promote its shadow, or append to another owner\'s table', async () => {
    const notOwner = { code: '42501', message: `only the owner of public.flowers (role ${(await db.sql<{ r: string }>('SELECT current_user AS r'))[0]!.r}) can deploy on it` };
    const admin = sessions.get(ADMIN)!;
    expect(await failure(admin.query(`SELECT ml.split('flowers', '{"iris@1": 50, "iris@2": 50}')`))).toEqual(notOwner);
    expect(await failure(admin.query(`SELECT ml.promote_shadow('flowers')`))).toEqual(notOwner);
    // A side table owned by someone else: the admin could otherwise make the worker write into it.
    expect(await failure(admin.query(
      `SELECT ml.deploy('sideways', 'admin_flowers', 'iris', $1, '{"species": "label"}', '{"target": "flowers"}')`, [IRIS_INPUTS])))
      .toMatchObject({ code: '42501', message: notOwner.message });
    // Nor create a side table where it may not create tables itself (the deploy runs as the schema owner).
    expect(await failure(admin.query(
      `SELECT ml.deploy('sideways', 'admin_flowers', 'iris', $1, '{"species": "label"}', '{"target": "ml.planted"}')`, [IRIS_INPUTS])))
      .toEqual({ code: '42501', message: `option "target": ${ADMIN} may not create tables in schema ml` });
    await db.sql(`CREATE SCHEMA IF NOT EXISTS locked_down`);
    expect(await failure(admin.query(
      `SELECT ml.deploy('sideways', 'admin_flowers', 'iris', $1, '{"species": "label"}', '{"target": "locked_down.planted"}')`, [IRIS_INPUTS])))
      .toEqual({ code: '42501', message: `option "target": ${ADMIN} may not create tables in schema locked_down` });
    // A worker may fill in a missing baseline from its first rows, never replace one.
    expect(await failure(sessions.get(WORKER_ROLE)!.query(`SELECT ml._store_baseline('iris', 1, 'query', 1, '{}', NULL)`)))
      .toEqual({ code: '42501', message: 'only members of pgscore_admin may set a baseline from a file or a query' });
  });

  it('no function in ml is executable by PUBLIC, the generated trigger function included', async () => {
    const functions = await db.sql<{ fn: string; public: boolean }>(`
      SELECT p.oid::regprocedure::text AS fn,
             p.proacl IS NULL OR EXISTS (SELECT 1 FROM aclexplode(p.proacl) a WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE') AS public
        FROM pg_proc p WHERE p.pronamespace = 'ml'::regnamespace ORDER BY 1`);
    expect(functions.map((f) => f.fn)).toContain(`ml._enqueue_${ctx.id}()`);
    expect(functions.filter((f) => f.public).map((f) => f.fn)).toEqual([]);
  });

  it('PUBLIC has no right on schema ml or on anything in it', async () => {
    const grants = await db.sql(`
      SELECT 'schema ml' AS object, a.privilege_type FROM pg_namespace n, aclexplode(n.nspacl) a
       WHERE n.nspname = 'ml' AND a.grantee = 0
      UNION ALL
      SELECT c.oid::regclass::text, a.privilege_type FROM pg_class c, aclexplode(c.relacl) a
       WHERE c.relnamespace = 'ml'::regnamespace AND a.grantee = 0`);
    expect(grants).toEqual([]);
  });
});

describe('attacks on a deployment', () => {
  let db: TestDatabase;

  const species = async (table: string, id: number) =>
    (await db.sql<{ species: string | null }>(`SELECT species FROM ${table} WHERE id = $1`, [id]))[0]?.species;

  beforeAll(async () => {
    db = await createTestDatabase();
    await push(db, 'iris', 'iris.onnx');
    await db.sql(FLOWERS);
    await db.sql(`CREATE TABLE plain (id int PRIMARY KEY, x real)`);
    await db.sql(`SELECT ml.deploy('flowers', 'flowers', 'iris', $1, '{"species": "label"}')`, [IRIS_INPUTS]);
    await db.sql(`GRANT SELECT, INSERT, UPDATE ON flowers TO ${APP}`);
    await db.sql(`GRANT CREATE ON SCHEMA public TO ${OTHER}, ${OWNER}, ${MALLORY}`);
  });
  afterAll(async () => {
    await db?.drop();
  });

  it("the application's INSERT is scored, though it has no rights on ml", async () => {
    await as(db, APP, async (app) => {
      const { rows } = await app.query(`SELECT has_schema_privilege('ml', 'USAGE') AS usage`);
      expect(rows).toEqual([{ usage: false }]);
      await app.query(`INSERT INTO flowers (id, sepal_length, sepal_width, petal_length, petal_width) VALUES (1, $1, $2, $3, $4)`, SETOSA);
    });
    const worker = await startWorker(db);
    try {
      expect(await waitFor(() => species('flowers', 1), 'the application row scored')).toBe('setosa');
    } finally {
      await worker.stop();
    }
  });

  it("SET pgscore.writeback = 'on' does not let the application skip scoring", async () => {
    expect(await pending(db, 'flowers')).toBe(0);
    await as(db, APP, async (app) => {
      await app.query(`SET pgscore.writeback = 'on'`);
      expect((await app.query('SHOW pgscore.writeback')).rows).toEqual([{ 'pgscore.writeback': 'on' }]);
      await app.query(`INSERT INTO flowers (id, sepal_length, sepal_width, petal_length, petal_width)
                       VALUES (2, $1, $2, $3, $4), (3, $5, $6, $7, $8)`, [...SETOSA, ...VIRGINICA]);
      await app.query(`UPDATE flowers SET sepal_length = $1, sepal_width = $2, petal_length = $3, petal_width = $4 WHERE id = 1`, VIRGINICA);
    });
    // Two inserted rows and one updated row wait for a worker.
    expect(await pending(db, 'flowers')).toBe(3);
    const worker = await startWorker(db);
    try {
      await waitFor(async () => (await species('flowers', 1)) === 'virginica' && (await pending(db, 'flowers')) === 0, 'the rows scored');
      expect(await species('flowers', 2)).toBe('setosa');
      expect(await species('flowers', 3)).toBe('virginica');
    } finally {
      await worker.stop();
    }
  });

  it('an operator another role put in public is not used by an input expression, and does not make it superuser', async () => {
    await as(db, OTHER, async (other) => {
      await other.query(`CREATE TABLE public.operator_calls (who name NOT NULL)`);
      await other.query(`GRANT INSERT ON public.operator_calls TO PUBLIC`);
      await other.query(`
        CREATE FUNCTION public.sneaky_times(real, numeric) RETURNS real LANGUAGE plpgsql SECURITY INVOKER AS $$
        BEGIN
          INSERT INTO public.operator_calls VALUES (current_user);
          BEGIN
            ALTER ROLE ${OTHER} SUPERUSER;
          EXCEPTION WHEN insufficient_privilege THEN NULL;
          END;
          RETURN $1 * 1000;
        END $$`);
      await other.query(`CREATE OPERATOR public.* (LEFTARG = real, RIGHTARG = numeric, FUNCTION = public.sneaky_times)`);
      // Under the default search_path the operator is an exact match, so it wins over pg_catalog's.
      const { rows } = await other.query(`SELECT 2::real * 1.2 AS product`);
      expect(rows).toEqual([{ product: 2000 }]);
    });
    expect(await db.sql(`SELECT who FROM operator_calls`)).toEqual([{ who: OTHER }]);

    // The README pattern: the DBA maps an expression over a column.
    await db.sql(`CREATE TABLE boosted (id int PRIMARY KEY, sepal_length real, sepal_width real, petal_length real, petal_width real)`);
    await db.sql(`SELECT ml.deploy('boosted', 'boosted', 'iris', $1, '{"species": "label"}')`,
      ['{"X": ["sepal_length", "sepal_width", "petal_length", "petal_width * 1.2"]}']);
    await db.sql(`INSERT INTO boosted VALUES (1, $1, $2, $3, $4), (2, $5, $6, $7, $8)`, [...SETOSA, ...VIRGINICA]);
    const worker = await startWorker(db);
    try {
      // With the operator, petal widths would be 1000 times larger and no row a setosa.
      expect(await waitFor(() => species('boosted', 1), 'row 1 scored')).toBe('setosa');
      expect(await waitFor(() => species('boosted', 2), 'row 2 scored')).toBe('virginica');
      // An UPDATE of the inputs evaluates the expression in the trigger, a backfill filter in ml.backfill.
      await db.sql(`UPDATE boosted SET sepal_length = $1, sepal_width = $2, petal_length = $3, petal_width = $4 WHERE id = 1`, VIRGINICA);
      await waitFor(async () => (await species('boosted', 1)) === 'virginica', 'row 1 rescored');
      const [backfilled] = await db.sql<{ n: string }>(`SELECT ml.backfill('boosted', 'petal_width * 1.2 > 0') AS n`);
      expect(backfilled!.n).toBe('2');
      await waitFor(async () => (await pending(db, 'boosted')) === 0, 'backfill scored');
    } finally {
      await worker.stop();
    }
    expect(await isSuperuser(db, OTHER)).toBe(false);
    expect(await db.sql(`SELECT who FROM operator_calls`)).toEqual([{ who: OTHER }]);
    expect(await db.sql(`SELECT deployment, dead_letters FROM ml.status WHERE deployment = 'boosted'`)).toEqual([
      { deployment: 'boosted', dead_letters: '0' },
    ]);
  });

  it("a table owner's trigger runs as the worker during write-back and cannot make the owner superuser", async () => {
    await as(db, OWNER, async (owner) => {
      await owner.query(`CREATE TABLE public.owned (id int PRIMARY KEY, sepal_length real, sepal_width real, petal_length real, petal_width real)`);
      await owner.query(`CREATE TABLE public.escalations (who name NOT NULL, outcome text NOT NULL)`);
      await owner.query(`GRANT INSERT ON public.escalations TO PUBLIC`);
      await owner.query(`
        CREATE FUNCTION public.escalate() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
          outcome text := 'succeeded';
        BEGIN
          BEGIN
            ALTER ROLE ${OWNER} SUPERUSER;
          EXCEPTION WHEN OTHERS THEN
            outcome := SQLERRM;
          END;
          INSERT INTO public.escalations VALUES (current_user, outcome);
          RETURN NEW;
        END $$`);
      await owner.query(`CREATE TRIGGER escalate BEFORE UPDATE ON public.owned FOR EACH ROW EXECUTE FUNCTION public.escalate()`);
    });
    await db.sql(`SELECT ml.deploy('owned', 'owned', 'iris', $1, '{"species": "label"}')`, [IRIS_INPUTS]);
    await as(db, OWNER, (owner) => owner.query(`INSERT INTO owned VALUES (1, $1, $2, $3, $4)`, SETOSA));
    const worker = await startWorker(db);
    try {
      expect(await waitFor(() => species('owned', 1), 'the owned row scored')).toBe('setosa');
    } finally {
      await worker.stop();
    }
    expect(await isSuperuser(db, OWNER)).toBe(false);
    const attempts = await db.sql<{ who: string; outcome: string }>(`SELECT who, outcome FROM escalations`);
    expect(attempts).toHaveLength(1);
    expect(attempts[0]!.who).toBe(WORKER_ROLE);
    // Postgres 15 and 16+ word the refusal differently.
    expect(attempts[0]!.outcome).toMatch(/^(permission denied to alter role|must be superuser to alter superuser roles)/);
  });

  it("a role with USAGE on ml cannot attach a deployment's trigger function to its own table", async () => {
    const id = (await db.sql<{ id: number }>(`SELECT id FROM ml._deployments WHERE name = 'flowers'`))[0]!.id;
    await db.sql(`GRANT USAGE ON SCHEMA ml TO ${OTHER}`);
    try {
      await as(db, OTHER, async (other) => {
        await other.query(`CREATE TABLE public.mine (id int PRIMARY KEY)`);
        expect(await failure(other.query(`
          CREATE TRIGGER steal AFTER INSERT ON public.mine REFERENCING NEW TABLE AS pgscore_new
          FOR EACH STATEMENT EXECUTE FUNCTION ml._enqueue_${id}()`))).toEqual(denied(`function ml._enqueue_${id}`));
      });
    } finally {
      await db.sql(`REVOKE USAGE ON SCHEMA ml FROM ${OTHER}`);
    }
    expect(await db.sql(`SELECT tgname FROM pg_trigger WHERE tgrelid = 'mine'::regclass`)).toEqual([]);
  });

  it('the worker role updates only prediction columns and reads only keys and inputs', async () => {
    await db.sql(`INSERT INTO flowers (id, sepal_length, sepal_width, petal_length, petal_width) VALUES (100, $1, $2, $3, $4)
                  ON CONFLICT (id) DO NOTHING`, SETOSA);
    await as(db, WORKER_ROLE, async (worker) => {
      expect(await failure(worker.query(`UPDATE flowers SET sepal_length = 1 WHERE id = 100`))).toEqual(denied('table flowers'));
      expect(await failure(worker.query(`UPDATE flowers SET note = 'x' WHERE id = 100`))).toEqual(denied('table flowers'));
      expect(await failure(worker.query(`SELECT note FROM flowers`))).toEqual(denied('table flowers'));
      expect(await failure(worker.query(`UPDATE plain SET x = 1`))).toEqual(denied('table plain'));
      expect(await failure(worker.query(`UPDATE plain SET id = 1`))).toEqual(denied('table plain'));
      // What it may do: write a prediction column, found by key.
      await worker.query('BEGIN');
      const { rowCount } = await worker.query(`UPDATE flowers SET species = 'x' WHERE id = 100`);
      await worker.query('ROLLBACK');
      expect(rowCount).toBe(1);
    });
  });

  // ml.backfill and the generated triggers run with the schema owner's rights (a superuser):
  // a member of pgscore_admin must not reach them with code of its own.
  describe('a pgscore_admin member cannot run its own code as the schema owner', () => {
    beforeAll(async () => {
      await as(db, MALLORY, async (mallory) => {
        await mallory.query(`CREATE TABLE public.payload_calls (who name NOT NULL)`);
        // A table of its own, so that ml.deploy gets past the ownership check to the expression.
        await mallory.query(FLOWERS.replace('TABLE flowers', 'TABLE mallory_flowers'));
        await mallory.query(`GRANT INSERT ON public.payload_calls TO PUBLIC`);
        await mallory.query(`
          CREATE FUNCTION public.payload() RETURNS boolean LANGUAGE plpgsql AS $$
          BEGIN
            INSERT INTO public.payload_calls VALUES (current_user);
            BEGIN
              ALTER ROLE ${MALLORY} SUPERUSER;
            EXCEPTION WHEN insufficient_privilege THEN NULL;
            END;
            RETURN true;
          END $$`);
        await mallory.query(`CREATE FUNCTION public.payload_check(real) RETURNS boolean LANGUAGE sql AS 'SELECT public.payload()'`);
        await mallory.query(`CREATE VIEW public.payload_view AS SELECT public.payload() AS x`);
        await mallory.query(`CREATE DOMAIN public.payload_real AS real CHECK (public.payload_check(VALUE))`);
        // Its own deployment, to backfill: only a table's owner may.
        await mallory.query(`SELECT ml.deploy('mallory_own', 'mallory_flowers', 'iris', $1, '{"own_species": "label"}')`, [IRIS_INPUTS]);
      });
    });

    it.each([
      ['a view, through schema_to_xml', `schema_to_xml('public', true, true, '') IS NOT NULL`],
      ['a view, through table_to_xml', `length(table_to_xml(to_regclass('public.payload_view'), true, true, '')::text) > 0`],
      ['a query, through query_to_xml', `query_to_xml('SELECT public.payload()', true, true, '') IS NOT NULL`],
      ["a domain's check", `sepal_length::public.payload_real > 0`],
    ])('ml.backfill refuses a filter that calls it through %s', async (_how, filter) => {
      const refusal = await as(db, MALLORY, (mallory) => errorOf(mallory.query(`SELECT ml.backfill('mallory_own', $1)`, [filter])));
      const calls = await db.sql(`SELECT who FROM payload_calls`);
      const superuser = await isSuperuser(db, MALLORY);
      // Reset before asserting, so that one failure does not decide the next case.
      await db.sql(`ALTER ROLE ${MALLORY} NOSUPERUSER`);
      await db.sql(`TRUNCATE payload_calls`);
      expect({ superuser, calls }).toEqual({ superuser: false, calls: [] });
      expect(refusal?.message).toContain('is refused');
    });

    it.each([
      ['a query, through query_to_xml', `length(query_to_xml('SELECT public.payload()', true, true, '')::text)`],
      ["a domain's check", `sepal_length::public.payload_real`],
    ])('ml.deploy refuses an input expression that calls it through %s', async (_how, expression) => {
      const inputs = JSON.stringify({ X: ['sepal_length', 'sepal_width', 'petal_length', expression] });
      const refusal = await as(db, MALLORY, (mallory) =>
        errorOf(mallory.query(`SELECT ml.deploy('mallory', 'mallory_flowers', 'iris', $1, '{"mallory_species": "label"}')`, [inputs])));
      // Had it been deployed, the next change of an input would run it in the trigger.
      if (!refusal) {
        await db.sql(`INSERT INTO mallory_flowers VALUES (1, 1, 1, 1, 1)`);
        await db.sql(`UPDATE mallory_flowers SET petal_length = petal_length + 1`);
      }
      const calls = await db.sql(`SELECT who FROM payload_calls`);
      const superuser = await isSuperuser(db, MALLORY);
      await db.sql(`SELECT ml.undeploy('mallory') FROM ml.deployments WHERE deployment = 'mallory'`);
      await db.sql(`ALTER ROLE ${MALLORY} NOSUPERUSER`);
      await db.sql(`TRUNCATE payload_calls`);
      expect({ superuser, calls }).toEqual({ superuser: false, calls: [] });
      expect(refusal?.message).toContain('is refused');
    });
  });
});

describe('the worker runs only as a member of pgscore_worker', () => {
  let db: TestDatabase;
  let superuser: string;

  beforeAll(async () => {
    db = await createTestDatabase();
    superuser = (await db.sql<{ me: string }>('SELECT current_user AS me'))[0]!.me;
  });
  afterAll(async () => {
    await db?.drop();
  });

  it('refuses a superuser, with exit code 2', async () => {
    const run = await pgscore(['worker'], { DATABASE_URL: db.url });
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(new RegExp(`^pgscore: pgscore refuses to score as superuser "${superuser}"\nhint: `));
  });

  it('starts as a superuser with --allow-superuser', async () => {
    const worker = startPgscore(['worker', '--allow-superuser'], { DATABASE_URL: db.url, PGSCORE_LOG_LEVEL: 'info' });
    try {
      await waitFor(async () => worker.output().includes('worker ready') || worker.exitCode !== null, 'worker ready');
      expect(worker.output()).toContain('worker ready');
    } finally {
      worker.kill('SIGTERM');
    }
    expect(await exited(worker)).toBe(0);
  });

  it('refuses a login role that is not a member of pgscore_worker, with exit code 2', async () => {
    const run = await pgscore(['worker'], { DATABASE_URL: connectionAs(db.url, OTHER, PASSWORD) });
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(new RegExp(`^pgscore: role "${OTHER}" is not a member of pgscore_worker\nhint: `));
  });
});
