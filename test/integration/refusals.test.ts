import { randomBytes } from 'node:crypto';
import { CronExpressionParser } from 'cron-parser';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { connectionAs } from '../../src/db/roles.js';
import { createTestDatabase, pending, push, startWorker, waitFor, type TestDatabase } from '../helpers/db.js';

// Tables pgscore cannot serve are refused at deploy, and a later change that makes a deployed
// table one of them turns the deployment invalid with the reason, while the statement succeeds.

const SUFFIX = randomBytes(3).toString('hex');
const PASSWORD = 'pgscore';
/** A non-superuser tenant that owns a table deployed by the DBA. */
const OWNER = `tenant_${SUFFIX}`;

const IRIS_INPUTS = '{"X": ["sl", "sw", "pl", "pw"]}';
const FLOWERS = (name: string, extra = '') => `CREATE TABLE ${name} (id int PRIMARY KEY, sl real, sw real, pl real, pw real, note text${extra})`;
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
  await serverAdmin([`CREATE ROLE ${OWNER} LOGIN PASSWORD '${PASSWORD}'`]);
});
afterAll(async () => {
  await serverAdmin([`DROP ROLE IF EXISTS ${OWNER}`]);
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

let db: TestDatabase;

beforeAll(async () => {
  db = await createTestDatabase();
  await push(db, 'iris', 'iris.onnx');
  await db.sql(`GRANT CREATE ON SCHEMA public TO ${OWNER}`);
});
afterAll(async () => {
  await db?.drop();
});

const deploy = (name: string, table: string, options = '{}') =>
  db.sql(`SELECT ml.deploy($1, $2, 'iris', $3, '{"species": "label"}', $4)`, [name, table, IRIS_INPUTS, options]);

const state = async (name: string) =>
  (await db.sql<{ status: string; reason: string | null }>(`SELECT status, reason FROM ml.deployments WHERE deployment = $1`, [name]))[0];

const insertRows = async (table: string, ids: readonly number[], values = SETOSA) => {
  for (const id of ids) await db.sql(`INSERT INTO ${table} (id, sl, sw, pl, pw) VALUES ($1, $2, $3, $4, $5)`, [id, ...values]);
};

async function as<T>(role: string, body: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: connectionAs(db.url, role, PASSWORD) });
  await client.connect();
  try {
    return await body(client);
  } finally {
    await client.end();
  }
}

const INHERITANCE_HINT = 'Use declarative partitioning (PARTITION BY), which pgscore supports, or deploy on a table outside any inheritance tree.';

describe('table inheritance is refused', () => {
  it('on a parent with a child table: the write-back by ctid would reach the child, whose rows are never queued', async () => {
    await db.sql(FLOWERS('parent', ', species text'));
    await db.sql(`CREATE TABLE child (PRIMARY KEY (id)) INHERITS (parent)`);
    expect(await failure(deploy('parent', 'parent'))).toEqual({
      code: '0A000',
      message: "public.parent has inheritance children (public.child): pgscore cannot tell their rows from the parent's",
      hint: INHERITANCE_HINT,
    });
    expect(await failure(deploy('child', 'child'))).toEqual({
      code: '0A000',
      message: 'public.child inherits from public.parent: pgscore cannot serve a table of an inheritance tree',
      hint: INHERITANCE_HINT,
    });
    expect(await db.sql(`SELECT count(*)::int AS n FROM ml._deployments`)).toEqual([{ n: 0 }]);
  });

  it('CREATE TABLE ... INHERITS a deployed table succeeds and turns the deployment invalid with the reason', async () => {
    await db.sql(FLOWERS('heir_parent'));
    await deploy('heir', 'heir_parent');
    await db.sql(`CREATE TABLE heir_child () INHERITS (heir_parent)`);
    expect(await state('heir')).toEqual({
      status: 'invalid',
      reason: "after CREATE TABLE public.heir_child: public.heir_parent has inheritance children (public.heir_child): pgscore cannot tell their rows from the parent's",
    });
    expect(await db.sql(`SELECT tgname FROM pg_trigger WHERE tgrelid = 'heir_parent'::regclass AND NOT tgisinternal`)).toEqual([]);
  });

  it('ALTER TABLE ... INHERIT, on the deployed table or on another, succeeds and turns the deployment invalid', async () => {
    await db.sql(FLOWERS('adopter'));
    await deploy('adopter', 'adopter');
    await db.sql(`CREATE TABLE adoptee (LIKE adopter)`);
    await db.sql(`ALTER TABLE adoptee INHERIT adopter`);
    expect(await state('adopter')).toEqual({
      status: 'invalid',
      reason: "after ALTER TABLE public.adoptee: public.adopter has inheritance children (public.adoptee): pgscore cannot tell their rows from the parent's",
    });
    await db.sql(FLOWERS('orphan'));
    await db.sql(`CREATE TABLE ancestor (id int)`);
    await deploy('orphan', 'orphan');
    await db.sql(`ALTER TABLE orphan INHERIT ancestor`);
    expect(await state('orphan')).toEqual({
      status: 'invalid',
      reason: 'after ALTER TABLE public.orphan: public.orphan inherits from public.ancestor: pgscore cannot serve a table of an inheritance tree',
    });
  });
});

describe('kinds of table', () => {
  it('a temporary table is refused: the worker can never see its rows', async () => {
    const client = new pg.Client({ connectionString: db.url });
    await client.connect();
    try {
      await client.query(`CREATE TEMP TABLE scratch (id int PRIMARY KEY, sl real, sw real, pl real, pw real)`);
      const error = await failure(client.query(`SELECT ml.deploy('scratch', 'scratch', 'iris', $1, '{"species": "label"}')`, [IRIS_INPUTS]));
      expect(error.code).toBe('0A000');
      expect(error.message).toMatch(/^pg_temp_\d+\.scratch is a temporary table: the worker, in another session, can never see its rows$/);
      expect(error.hint).toBe('Deploy on a permanent table (an UNLOGGED table is fine).');
    } finally {
      await client.end();
    }
  });

  it('views and foreign tables are refused; an unlogged table is served', async () => {
    await db.sql(FLOWERS('unlogged_base').replace('CREATE TABLE', 'CREATE UNLOGGED TABLE'));
    await db.sql(`CREATE VIEW flower_view AS SELECT * FROM unlogged_base`);
    expect(await failure(deploy('view', 'flower_view'))).toEqual({ code: '42809', message: 'public.flower_view is not a table', hint: undefined });
    await db.sql(`CREATE FOREIGN DATA WRAPPER refusals_fdw`);
    await db.sql(`CREATE SERVER refusals_server FOREIGN DATA WRAPPER refusals_fdw`);
    await db.sql(`CREATE FOREIGN TABLE far_flowers (id int, sl real, sw real, pl real, pw real) SERVER refusals_server`);
    expect(await failure(deploy('far', 'far_flowers'))).toEqual({ code: '42809', message: 'public.far_flowers is not a table', hint: undefined });

    await deploy('unlogged', 'unlogged_base');
    await insertRows('unlogged_base', [1]);
    const worker = await startWorker(db);
    try {
      expect(await waitFor(async () => (await db.sql<{ species: string | null }>(`SELECT species FROM unlogged_base WHERE id = 1`))[0]?.species,
        'the unlogged row scored')).toBe('setosa');
    } finally {
      await worker.stop();
    }
  });
});

describe('schedules the worker cannot run are refused', () => {
  const batch = (options: Record<string, string>) => JSON.stringify({ mode: 'batch', schedule: '0 2 * * *', ...options });

  it("timezone 'Factory' (which Postgres knows, but the worker's Intl does not) is refused", async () => {
    await db.sql(FLOWERS('nightly'));
    expect(await failure(deploy('nightly', 'nightly', batch({ timezone: 'Factory' })))).toEqual({
      code: '22023',
      message: 'option "timezone": "Factory" is not a time zone the worker can read',
      hint: "The worker reads schedules with the IANA zones of Node's Intl; Factory, posixrules, localtime and the posix/ and right/ copies are not among them. Use a zone like 'Europe/Paris'.",
    });
    expect(await failure(deploy('nightly', 'nightly', batch({ schedule: '61 * * * *' })))).toMatchObject({
      code: '22023', message: "schedule '61 * * * *': minute 61 is out of range (0-59)",
    });
    await deploy('nightly', 'nightly', batch({ timezone: 'Europe/Paris' }));
    expect((await state('nightly'))?.status).toBe('active');
  });

  it('ml.deploy and the worker agree on every zone of pg_timezone_names', async () => {
    const zones = await db.sql<{ name: string; accepted: boolean }>(`SELECT name, ml._worker_timezone(name) AS accepted FROM pg_timezone_names`);
    const workerReads = (tz: string) => {
      try {
        CronExpressionParser.parse('0 2 * * *', { tz }).next();
        return true;
      } catch {
        return false;
      }
    };
    const disagreements = zones.filter((z) => z.accepted !== workerReads(z.name)).map((z) => z.name);
    expect(disagreements).toEqual([]);
    expect(zones.length).toBeGreaterThan(300);
  });
});

const RLS_HINT = (table: string) =>
  `Add a policy that lets pgscore_worker see and update every row (CREATE POLICY pgscore ON ${table} TO pgscore_worker USING (true)), then deploy with options {"row_security": "worker_sees_all"}.`;

describe('row-level security', () => {
  it('a table with RLS and no policy for the worker is refused (20 rows used to end 0 scored, 0 pending, 0 dead letters)', async () => {
    await db.sql(FLOWERS('secured'));
    await db.sql(`ALTER TABLE secured ENABLE ROW LEVEL SECURITY`);
    expect(await failure(deploy('secured', 'secured'))).toEqual({
      code: '42501',
      message: 'public.secured has row-level security enabled: the worker would not see every row, and a row it cannot see is never scored',
      hint: RLS_HINT('public.secured'),
    });
    expect(await failure(deploy('secured', 'secured', '{"row_security": "worker_sees_all"}'))).toEqual({
      code: '42501',
      message: 'option "row_security" says the worker sees every row of public.secured, but no policy of it lets pgscore_worker see and update rows',
      hint: 'CREATE POLICY pgscore ON public.secured TO pgscore_worker USING (true), or give every login role of pgscore_worker BYPASSRLS.',
    });
  });

  it('ENABLE and FORCE ROW LEVEL SECURITY on a deployed table succeed and turn it invalid', async () => {
    await db.sql(FLOWERS('later_secured'));
    await deploy('later_secured', 'later_secured');
    await db.sql(`ALTER TABLE later_secured ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY`);
    expect(await state('later_secured')).toEqual({
      status: 'invalid',
      reason: 'after ALTER TABLE public.later_secured: public.later_secured has row-level security enabled: the worker would not see every row, and a row it cannot see is never scored',
    });
  });

  it('with a policy for pgscore_worker and the option, rows are scored; a row a policy still hides becomes a dead letter naming RLS', async () => {
    await db.sql(FLOWERS('policed'));
    await db.sql(`ALTER TABLE policed ENABLE ROW LEVEL SECURITY`);
    // The owner's policy lets the worker see only ids up to 10: the other 10 rows are hidden.
    await db.sql(`CREATE POLICY pgscore ON policed TO pgscore_worker USING (id <= 10)`);
    await deploy('policed', 'policed', '{"row_security": "worker_sees_all"}');
    expect((await state('policed'))?.status).toBe('active');
    await insertRows('policed', Array.from({ length: 20 }, (_, i) => i + 1));
    const worker = await startWorker(db);
    try {
      await waitFor(async () => (await db.sql<{ n: number }>(`SELECT count(*)::int AS n FROM ml.errors WHERE deployment = 'policed'`))[0]!.n === 10,
        'the hidden rows dead-lettered');
      await waitFor(async () => (await db.sql<{ n: number }>(`SELECT count(species)::int AS n FROM policed`))[0]!.n === 10, 'the visible rows scored');
      // A visible row the model refuses is a dead letter too: recorded for the version read,
      // which the write-back share-locks through the worker's policy.
      await db.sql(`UPDATE policed SET sl = 'NaN' WHERE id = 3`);
      await waitFor(async () => (await db.sql(`SELECT 1 FROM ml.errors WHERE deployment = 'policed' AND row_key = '{"id": 3}'`)).length === 1,
        'the refused row dead-lettered');
      await db.sql(`UPDATE policed SET sl = 5.1 WHERE id = 3`);
      await waitFor(async () => (await db.sql(`SELECT 1 FROM ml.errors WHERE deployment = 'policed' AND row_key = '{"id": 3}'`)).length === 0,
        'the fixed row scored and its dead letter cleared');
    } finally {
      await worker.stop();
    }
    expect(await pending(db, 'policed')).toBe(0);
    const errors = await db.sql<{ row_key: { id: number }; reason: string }>(
      `SELECT row_key, reason FROM ml.errors WHERE deployment = 'policed' ORDER BY (row_key->>'id')::int`);
    expect(errors.map((e) => e.row_key.id)).toEqual([11, 12, 13, 14, 15, 16, 17, 18, 19, 20]);
    expect(new Set(errors.map((e) => e.reason))).toEqual(new Set([
      'row-level security on public.policed hides this row from the worker: no policy lets pgscore_worker see it, so it was not scored',
    ]));
    expect(await db.sql(`SELECT count(*)::int AS n FROM policed WHERE id > 10 AND species IS NOT NULL`)).toEqual([{ n: 0 }]);
  });
});

const CODE_HINT = "Keep the trigger off the write-back: list your own columns (UPDATE OF ...), or add WHEN (current_setting('pgscore.writeback', true) IS DISTINCT FROM 'on'); or disable it. For a constraint, index or column, use functions of pg_catalog.";
const CODE_TAIL = ": it would run during the write-back in the worker's session, whose rights reach every deployed table";
const SKIP_WRITE_BACK = "WHEN (current_setting('pgscore.writeback', true) IS DISTINCT FROM 'on')";

describe("a table owner's code never runs in the worker's session", () => {
  let victimQueue = '';

  beforeAll(async () => {
    // Another tenant's deployment, with a row the hostile owner must not read, score or dequeue.
    await db.sql(FLOWERS('victim'));
    await deploy('victim', 'victim');
    const id = (await db.sql<{ id: number }>(`SELECT id FROM ml._deployments WHERE name = 'victim'`))[0]!.id;
    victimQueue = `ml._queue_${id}`;
    await as(OWNER, async (owner) => {
      await owner.query(FLOWERS('public.owned'));
      await owner.query(`CREATE TABLE public.attempts (who name NOT NULL, what text NOT NULL, outcome text NOT NULL)`);
      await owner.query(`GRANT INSERT ON public.attempts TO PUBLIC`);
      // Reads another table's inputs, sets its prediction to 'pwned', empties its queue.
      await owner.query(`
        CREATE FUNCTION public.reach() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
          what text;
          outcome text;
        BEGIN
          FOREACH what IN ARRAY ARRAY['SELECT count(sl) FROM public.victim', 'UPDATE public.victim SET species = ''pwned''',
                                      'DELETE FROM ${victimQueue}'] LOOP
            BEGIN
              EXECUTE what;
              outcome := 'succeeded';
            EXCEPTION WHEN OTHERS THEN
              outcome := SQLERRM;
            END;
            INSERT INTO public.attempts VALUES (current_user, what, outcome);
          END LOOP;
          RETURN NEW;
        END $$`);
    });
  });

  it('a trigger that fires on the write-back is refused at deploy, SECURITY DEFINER or not', async () => {
    await as(OWNER, (owner) => owner.query(`CREATE TRIGGER reach BEFORE UPDATE ON public.owned FOR EACH ROW EXECUTE FUNCTION public.reach()`));
    const refusal = { code: '42501', message: `trigger reach on public.owned runs public.reach()${CODE_TAIL}`, hint: CODE_HINT };
    expect(await failure(deploy('owned', 'owned'))).toEqual(refusal);
    // Running as its owner, it could still change the worker's session (search_path, prepared statements).
    await as(OWNER, (owner) => owner.query(`ALTER FUNCTION public.reach() SECURITY DEFINER`));
    expect(await failure(deploy('owned', 'owned'))).toEqual(refusal);
  });

  it('a CHECK constraint that calls the owner\'s function is refused too', async () => {
    await as(OWNER, async (owner) => {
      await owner.query(`CREATE FUNCTION public.sane(real) RETURNS boolean LANGUAGE sql AS 'SELECT $1 >= 0'`);
      await owner.query(FLOWERS('public.checked', ', CHECK (public.sane(sl))'));
    });
    expect(await failure(deploy('checked', 'checked'))).toEqual({
      code: '42501',
      message: `constraint checked_sl_check on public.checked calls public.sane(real), which belongs to neither pg_catalog nor a superuser${CODE_TAIL}`,
      hint: CODE_HINT,
    });
  });

  it('a domain whose CHECK calls the owner\'s function, and a rule on UPDATE, are refused', async () => {
    await as(OWNER, async (owner) => {
      await owner.query(`CREATE DOMAIN public.sane_real AS real CHECK (public.sane(VALUE))`);
      await owner.query(`CREATE TABLE public.domained (id int PRIMARY KEY, sl public.sane_real, sw real, pl real, pw real)`);
      await owner.query(FLOWERS('public.ruled'));
      await owner.query(`CREATE TABLE public.rule_log (id int)`);
      await owner.query(`CREATE RULE log_update AS ON UPDATE TO public.ruled DO ALSO INSERT INTO public.rule_log VALUES (NEW.id)`);
    });
    expect(await failure(db.sql(`SELECT ml.deploy('domained', 'domained', 'iris', '{"X": ["sl::real", "sw", "pl", "pw"]}', '{"species": "label"}')`))).toEqual({
      code: '42501',
      message: `the type public.sane_real of column sl on public.domained calls public.sane(real), which belongs to neither pg_catalog nor a superuser${CODE_TAIL}`,
      hint: CODE_HINT,
    });
    expect(await failure(deploy('ruled', 'ruled'))).toEqual({
      code: '0A000',
      message: 'rule log_update on public.ruled rewrites the UPDATE pgscore writes predictions with',
      hint: 'Drop the rule (a trigger does the same job), or deploy with a side table (option "target").',
    });
  });

  it('a trigger on other columns (UPDATE OF note) does not fire on the write-back and is accepted', async () => {
    await as(OWNER, async (owner) => {
      await owner.query(FLOWERS('public.noted'));
      await owner.query(`CREATE TRIGGER reach BEFORE UPDATE OF note ON public.noted FOR EACH ROW EXECUTE FUNCTION public.reach()`);
    });
    await deploy('noted', 'noted');
    expect((await state('noted'))?.status).toBe('active');
  });

  it('a trigger whose WHEN skips the write-back is accepted: it never runs in the worker, and reaches nothing of another tenant', async () => {
    await as(OWNER, async (owner) => {
      await owner.query(`DROP TRIGGER reach ON public.owned`);
      await owner.query(`CREATE TRIGGER reach BEFORE UPDATE ON public.owned FOR EACH ROW ${SKIP_WRITE_BACK} EXECUTE FUNCTION public.reach()`);
    });
    await deploy('owned', 'owned');
    await insertRows('victim', [1], VIRGINICA);
    await as(OWNER, (owner) => owner.query(`INSERT INTO owned (id, sl, sw, pl, pw) VALUES (1, $1, $2, $3, $4)`, SETOSA));
    const worker = await startWorker(db);
    try {
      await waitFor(async () => (await db.sql<{ species: string | null }>(`SELECT species FROM owned WHERE id = 1`))[0]?.species, 'the owned row scored');
      await waitFor(async () => (await db.sql<{ species: string | null }>(`SELECT species FROM victim WHERE id = 1`))[0]?.species, 'the victim row scored');
    } finally {
      await worker.stop();
    }
    expect(await db.sql(`SELECT who, what, outcome FROM attempts`)).toEqual([]);
    expect(await db.sql(`SELECT species FROM victim`)).toEqual([{ species: 'virginica' }]);
    // The owner's own UPDATE still fires it, with the owner's rights.
    await as(OWNER, (owner) => owner.query(`UPDATE owned SET note = 'x' WHERE id = 1`));
    expect(await db.sql(`SELECT DISTINCT who, outcome FROM attempts ORDER BY outcome`)).toEqual([
      { who: OWNER, outcome: 'permission denied for schema ml' },
      { who: OWNER, outcome: 'permission denied for table victim' },
    ]);

    // Without the WHEN, the deployment turns invalid.
    await as(OWNER, async (owner) => {
      await owner.query(`DROP TRIGGER reach ON public.owned`);
      await owner.query(`CREATE TRIGGER reach BEFORE UPDATE ON public.owned FOR EACH ROW EXECUTE FUNCTION public.reach()`);
    });
    expect(await state('owned')).toEqual({
      status: 'invalid',
      reason: `after CREATE TRIGGER reach on public.owned: trigger reach on public.owned runs public.reach()${CODE_TAIL}`,
    });
  });

  it('CREATE TRIGGER, or ENABLE TRIGGER, on a deployed table succeeds and turns the deployment invalid', async () => {
    await as(OWNER, async (owner) => {
      await owner.query(`CREATE FUNCTION public.plain() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END'`);
      await owner.query(`CREATE TRIGGER plain AFTER UPDATE ON public.noted FOR EACH ROW EXECUTE FUNCTION public.plain()`);
    });
    expect(await state('noted')).toEqual({
      status: 'invalid',
      reason: `after CREATE TRIGGER plain on public.noted: trigger plain on public.noted runs public.plain()${CODE_TAIL}`,
    });
    await as(OWNER, (owner) => owner.query(`ALTER TABLE public.noted DISABLE TRIGGER plain`));
    await deploy('noted', 'noted');
    expect((await state('noted'))?.status).toBe('active');
    await as(OWNER, (owner) => owner.query(`ALTER TABLE public.noted ENABLE TRIGGER plain`));
    expect(await state('noted')).toEqual({
      status: 'invalid',
      reason: `after ALTER TABLE public.noted: trigger plain on public.noted runs public.plain()${CODE_TAIL}`,
    });
  });
});

describe("pgscore's DDL never makes writers queue", () => {
  it('ml.undeploy behind an open transaction: another writer\'s INSERT is not held up, and undeploy finishes after it', async () => {
    await db.sql(FLOWERS('busy'));
    await deploy('busy', 'busy');
    await insertRows('busy', [1]);
    const holder = new pg.Client({ connectionString: db.url });
    const undeployer = new pg.Client({ connectionString: db.url });
    const writer = new pg.Client({ connectionString: db.url });
    await Promise.all([holder.connect(), undeployer.connect(), writer.connect()]);
    try {
      await holder.query(`BEGIN`);
      await holder.query(`UPDATE busy SET note = 'held' WHERE id = 1`);
      const undeploying = undeployer.query(`SELECT ml.undeploy('busy')`);
      // Until ml.undeploy is trying its locks, nothing below would be tested.
      await waitFor(async () => (await db.sql<{ n: number }>(
        `SELECT count(*)::int AS n FROM pg_stat_activity WHERE query = 'SELECT ml.undeploy(''busy'')' AND state = 'active'`))[0]!.n === 1,
        'ml.undeploy running');
      const inserts: number[] = [];
      for (const id of [2, 3, 4, 5, 6]) {
        const started = performance.now();
        await writer.query(`INSERT INTO busy (id, sl, sw, pl, pw) VALUES ($1, 1, 1, 1, 1)`, [id]);
        inserts.push(performance.now() - started);
      }
      // Each INSERT waits at most for one lock try of ml.undeploy (50 ms), never for the holder.
      expect(Math.max(...inserts)).toBeLessThan(500);
      expect(await db.sql(`SELECT status FROM ml.deployments WHERE deployment = 'busy'`)).toEqual([{ status: 'active' }]);
      await holder.query(`COMMIT`);
      await undeploying;
      expect(await db.sql(`SELECT count(*)::int AS n FROM ml.deployments WHERE deployment = 'busy'`)).toEqual([{ n: 0 }]);
    } finally {
      await holder.query('ROLLBACK').catch(() => undefined);
      await Promise.all([holder.end(), undeployer.end(), writer.end()]);
    }
  });

  it("ml.undeploy while an application's ALTER TABLE on a partitioned table waits: neither fails, neither deadlocks", async () => {
    // The generated suite's F11: ml.undeploy listed the partitions with pg_partition_tree, which
    // locks each of them to the end of the transaction; an ALTER TABLE holding the parent then
    // waited for a partition while ml.undeploy waited for the parent, and Postgres aborted one.
    await db.sql(`CREATE TABLE parted (id int PRIMARY KEY, sl real, sw real, pl real, pw real, species text, note text)
                  PARTITION BY RANGE (id)`);
    await db.sql(`CREATE TABLE parted_low PARTITION OF parted FOR VALUES FROM (0) TO (100)`);
    await db.sql(`CREATE TABLE parted_high PARTITION OF parted FOR VALUES FROM (100) TO (200)`);
    await deploy('parted', 'parted');
    const app = new pg.Client({ connectionString: db.url });
    const undeployer = new pg.Client({ connectionString: db.url });
    await Promise.all([app.connect(), undeployer.connect()]);
    try {
      await app.query('BEGIN');
      await app.query('LOCK TABLE ONLY parted IN ACCESS EXCLUSIVE MODE');
      const undeploying = undeployer.query(`SELECT ml.undeploy('parted')`).then(() => 'undeployed', (error: Error) => error.message);
      await waitFor(async () => (await db.sql<{ n: number }>(
        `SELECT count(*)::int AS n FROM pg_stat_activity WHERE query = 'SELECT ml.undeploy(''parted'')' AND state = 'active'`))[0]!.n === 1,
        'ml.undeploy running');
      await new Promise((resolve) => setTimeout(resolve, 200));
      // Needs every partition: before, one was locked by ml.undeploy (a deadlock after 1 s).
      await app.query('ALTER TABLE parted ADD COLUMN extra int');
      await app.query('COMMIT');
      expect(await undeploying).toBe('undeployed');
      expect(await db.sql(`SELECT count(*)::int AS n FROM ml.deployments WHERE deployment = 'parted'`)).toEqual([{ n: 0 }]);
    } finally {
      await app.query('ROLLBACK').catch(() => undefined);
      await Promise.all([app.end(), undeployer.end()]);
    }
  });

  it("ml.promote while an application's transaction holds the table and then alters it: neither fails", async () => {
    // The generated suite: ml.promote locked the deployment row and then read the table's
    // triggers; the ALTER TABLE held the table, and its event trigger waited for the row.
    await db.sql(FLOWERS('promoted'));
    await push(db, 'iris_promo', 'iris.onnx', true);
    await push(db, 'iris_promo', 'iris.onnx');
    await db.sql(`SELECT ml.deploy('promoted', 'promoted', 'iris_promo', $1, '{"species": "label"}')`, [IRIS_INPUTS]);
    const app = new pg.Client({ connectionString: db.url });
    const dba = new pg.Client({ connectionString: db.url });
    await Promise.all([app.connect(), dba.connect()]);
    try {
      await app.query('BEGIN');
      await app.query('LOCK TABLE promoted IN ACCESS EXCLUSIVE MODE');
      const promoting = dba.query(`SELECT ml.promote('iris_promo', 2)`).then(() => 'promoted', (error: Error) => error.message);
      await waitFor(async () => (await db.sql<{ n: number }>(
        `SELECT count(*)::int AS n FROM pg_stat_activity WHERE query LIKE 'SELECT ml.promote(''iris_promo'', 2)' AND state = 'active'`))[0]!.n === 1,
        'ml.promote running');
      await new Promise((resolve) => setTimeout(resolve, 200));
      await app.query('ALTER TABLE promoted ADD COLUMN extra int');
      await app.query('COMMIT');
      expect(await promoting).toBe('promoted');
      expect(await db.sql(`SELECT version FROM ml._aliases WHERE model = 'iris_promo' AND alias = 'production'`)).toEqual([{ version: 2 }]);
      expect((await state('promoted'))?.status).toBe('active');
    } finally {
      await app.query('ROLLBACK').catch(() => undefined);
      await Promise.all([app.end(), dba.end()]);
    }
  });

  it("ml.deploy again while the worker re-checks the deployment after a failed batch: neither fails", async () => {
    // CI: ml.deploy took the deployment row, the worker's re-check took the table and waited
    // for the row, and ml.deploy then gave way on the table ("gave way: session N holds
    // public.sided and waits for this transaction"). The worker gives way now, holding nothing.
    await db.sql(FLOWERS('rechecked'));
    await deploy('rechecked', 'rechecked');
    await db.sql(`ALTER TABLE rechecked ALTER COLUMN sl TYPE text`);
    expect((await state('rechecked'))?.status).toBe('invalid');
    await db.sql(`ALTER TABLE rechecked ALTER COLUMN sl TYPE real USING sl::real`);
    const [{ id }] = await db.sql<{ id: number }>(`SELECT id FROM ml._deployments WHERE name = 'rechecked'`) as [{ id: number }];
    const model = new pg.Client({ connectionString: db.url });
    const dba = new pg.Client({ connectionString: db.url });
    const worker = new pg.Client({ connectionString: db.url });
    await Promise.all([model.connect(), dba.connect(), worker.connect()]);
    try {
      // Holds ml.deploy between the deployment row and the table: it reads the model's row next.
      await model.query('BEGIN');
      await model.query(`SELECT 1 FROM ml._models WHERE name = 'iris' FOR UPDATE`);
      const deploying = dba.query(`SELECT ml.deploy('rechecked', 'rechecked', 'iris', $1, '{"species": "label"}')`, [IRIS_INPUTS])
        .then(() => 'deployed', (error: Error) => error.message);
      await waitFor(async () => (await db.sql<{ n: number }>(
        `SELECT count(*)::int AS n FROM pg_stat_activity WHERE query LIKE 'SELECT ml.deploy(''rechecked''%' AND wait_event_type = 'Lock'`))[0]!.n === 1,
        'ml.deploy waiting for the model row');
      const rechecking = worker.query<{ status: string }>(`SELECT ml._recheck($1, 'a batch failed', 10000) AS status`, [id])
        .then(({ rows }) => rows[0]!.status, (error: Error) => error.message);
      await new Promise((resolve) => setTimeout(resolve, 300));
      await model.query('COMMIT');
      expect(await deploying).toBe('deployed');
      expect(await rechecking).toBe('active');
      expect((await state('rechecked'))?.status).toBe('active');
    } finally {
      await model.query('ROLLBACK').catch(() => undefined);
      await Promise.all([model.end(), dba.end(), worker.end()]);
    }
  });

  it('ml.undeploy beside a sleeping worker finishes at once (the worker held the queue\'s sequence while it slept)', async () => {
    // The generated suite (a 19-minute hang): the sleeping worker read the queue heads inside its
    // idle-lock transaction and held each queue's sequence until it woke; ml.undeploy, holding
    // the queue, waited for the sequence without a limit; the worker's safety poll waited for the
    // queue, and the worker never woke.
    await db.sql(FLOWERS('sleepy'));
    await deploy('sleepy', 'sleepy');
    const worker = await startWorker(db, { pollIntervalMs: 20_000 });
    try {
      await insertRows('sleepy', [1, 2]);
      await waitFor(async () => (await db.sql(`SELECT 1 FROM sleepy WHERE species IS NOT NULL`)).length === 2, 'rows scored');
      // Asleep: its idle-lock transaction open.
      await waitFor(async () => (await db.sql<{ n: number }>(
        `SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'pgscore idle lock' AND state = 'idle in transaction'`))[0]!.n === 1,
        'the worker asleep', 10_000);
      await new Promise((resolve) => setTimeout(resolve, 300));
      const started = performance.now();
      await db.sql(`SELECT ml.undeploy('sleepy')`);
      expect(performance.now() - started).toBeLessThan(3_000);
    } finally {
      await worker.stop();
    }
  });

  it('gives up with a clear error after pgscore.lock_wait', async () => {
    await db.sql(FLOWERS('stuck'));
    await deploy('stuck', 'stuck');
    await insertRows('stuck', [1]);
    const holder = new pg.Client({ connectionString: db.url });
    const undeployer = new pg.Client({ connectionString: db.url });
    await Promise.all([holder.connect(), undeployer.connect()]);
    try {
      await holder.query(`BEGIN`);
      await holder.query(`UPDATE stuck SET note = 'held' WHERE id = 1`);
      await undeployer.query(`SET pgscore.lock_wait = '300ms'`);
      const error = await failure(undeployer.query(`SELECT ml.undeploy('stuck')`));
      expect(error.code).toBe('55P03');
      expect(error.message).toMatch(/^ml\.undeploy could not lock public\.stuck, ml\._queue_\d+ within 00:00:00\.3 \(\d+ tries\): other transactions kept it busy$/);
      expect(error.hint).toBe('pgscore takes locks on application tables only in short tries, so that writers never queue behind it. '
        + 'Run it again once the long transactions on the table have ended (see pg_stat_activity), or raise pgscore.lock_wait.');
      expect((await state('stuck'))?.status).toBe('active');
    } finally {
      await holder.query('ROLLBACK').catch(() => undefined);
      await Promise.all([holder.end(), undeployer.end()]);
    }
  });
});
