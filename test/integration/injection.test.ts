import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { Worker } from '../../src/worker/worker.js';
import { createTestDatabase, pending, push, startWorker, waitFor, type TestDatabase } from '../helpers/db.js';

const IRIS_INPUTS = '{"X": ["sl", "sw", "pl", "pw"]}';
const SETOSA = [5.1, 3.5, 1.4, 0.2];
const VIRGINICA = [6.7, 3.0, 5.2, 2.3];
/** Owns a stable function in public: a role that is no superuser (roles are server-wide, hence the suffix). */
const STRANGER = `stranger_${randomBytes(3).toString('hex')}`;

/** Everything an injected statement could have changed, as text, plus the canaries. */
interface Snapshot {
  readonly relations: string;
  readonly columns: string;
  readonly functions: string;
  readonly triggers: string;
  readonly deployments: unknown;
  readonly models: unknown;
  readonly pending: string;
  readonly victim_rows: string;
  readonly canary_calls: string;
}

const USER_SCHEMAS = `(SELECT oid FROM pg_namespace WHERE nspname !~ '^pg_' AND nspname <> 'information_schema')`;
const SNAPSHOT = `
  SELECT (SELECT string_agg(x, ', ' ORDER BY x) FROM (
            SELECT format('%s (%s)', c.oid::regclass, c.relkind) AS x FROM pg_class c WHERE c.relnamespace IN ${USER_SCHEMAS}) t) AS relations,
         (SELECT string_agg(x, ', ' ORDER BY x) FROM (
            SELECT format('%s.%I', a.attrelid::regclass, a.attname) AS x FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
             WHERE c.relnamespace IN ${USER_SCHEMAS} AND a.attnum > 0 AND NOT a.attisdropped) t) AS columns,
         (SELECT string_agg(x, ', ' ORDER BY x) FROM (
            SELECT p.oid::regprocedure::text AS x FROM pg_proc p WHERE p.pronamespace IN ${USER_SCHEMAS}) t) AS functions,
         (SELECT string_agg(x, ', ' ORDER BY x) FROM (
            SELECT format('%I on %s', t.tgname, t.tgrelid::regclass) AS x FROM pg_trigger t WHERE NOT t.tgisinternal) t) AS triggers,
         (SELECT jsonb_agg(d ORDER BY d.deployment) FROM (SELECT deployment, source, model, status, inputs, outputs FROM ml.deployments) d) AS deployments,
         (SELECT jsonb_agg(m ORDER BY m.name, m.version) FROM (SELECT name, version, aliases FROM ml.models) m) AS models,
         (SELECT coalesce(sum(pending), 0) FROM ml.status) AS pending,
         (SELECT count(*) FROM victim) AS victim_rows,
         (SELECT count(*) FROM canary_calls) AS canary_calls`;

/** A call that must fail with an error whose message contains `refusal` (or matches it). */
interface Attempt {
  readonly sql: string;
  readonly values: readonly unknown[];
  readonly refusal: string | RegExp;
  /** Statements that undo what the call did, should it succeed after all. */
  readonly undo?: readonly string[];
}

describe('an injection corpus through every argument of the SQL surface', () => {
  let db: TestDatabase;

  const snapshot = async () => (await db.sql<Snapshot & pg.QueryResultRow>(SNAPSHOT))[0]!;

  beforeAll(async () => {
    db = await createTestDatabase();
    await push(db, 'iris', 'iris.onnx');
    await db.sql(`CREATE TABLE flowers (id int PRIMARY KEY, sl real, sw real, pl real, pw real, name text)`);
    await db.sql(`INSERT INTO flowers VALUES (1, $1, $2, $3, $4), (2, $5, $6, $7, $8)`, [...SETOSA, ...VIRGINICA]);
    await db.sql(`CREATE TABLE victim (id int PRIMARY KEY)`);
    await db.sql(`INSERT INTO victim VALUES (1), (2), (3)`);
    await db.sql(`CREATE TABLE secrets (id int PRIMARY KEY, secret real)`);
    await db.sql(`INSERT INTO secrets VALUES (1, 42)`);
    // canary() has a side effect: every call leaves a row, whoever makes it.
    await db.sql(`CREATE TABLE canary_calls (who name NOT NULL DEFAULT current_user)`);
    await db.sql(`GRANT INSERT ON canary_calls TO PUBLIC`);
    await db.sql(`CREATE FUNCTION canary() RETURNS real LANGUAGE plpgsql AS $$
                    BEGIN INSERT INTO public.canary_calls DEFAULT VALUES; RETURN 1; END $$`);
    await db.sql(`CREATE VIEW canary_view AS SELECT canary() AS x`);
    await db.sql(`CREATE ROLE ${STRANGER} NOLOGIN`);
    await db.sql(`CREATE FUNCTION canary_stable(real) RETURNS real LANGUAGE sql STABLE AS 'SELECT $1'`);
    await db.sql(`ALTER FUNCTION canary_stable(real) OWNER TO ${STRANGER}`);
    await db.sql(`SELECT ml.deploy('flowers', 'flowers', 'iris', $1, '{"species": "label"}')`, [IRIS_INPUTS]);
    // The deploy's backfill is not scored (no worker): the queue holds both rows throughout.
    expect(await snapshot()).toMatchObject({ victim_rows: '3', canary_calls: '0', pending: '2' });
  });
  afterAll(async () => {
    await db?.drop();
    const admin = new pg.Client({ connectionString: inject('adminUrl') });
    await admin.connect();
    await admin.query(`DROP ROLE IF EXISTS ${STRANGER}`);
    await admin.end();
  });

  const attempt = (sql: string, values: readonly unknown[], refusal: string | RegExp, undo?: readonly string[]): Attempt => ({
    sql, values, refusal, undo,
  });
  const deployAs = (name: string, refusal: string | RegExp) =>
    attempt(`SELECT ml.deploy($1, 'flowers', 'iris', $2, '{"p": "label"}')`, [name, IRIS_INPUTS], refusal, [`SELECT ml.undeploy($1)`]);
  const deployOn = (source: string, refusal: string | RegExp) =>
    attempt(`SELECT ml.deploy('inj', $1, 'iris', $2, '{"p": "label"}')`, [source, IRIS_INPUTS], refusal, [`SELECT ml.undeploy('inj')`]);
  const deployModel = (model: string, refusal: string | RegExp) =>
    attempt(`SELECT ml.deploy('inj', 'flowers', $1, $2, '{"p": "label"}')`, [model, IRIS_INPUTS], refusal, [`SELECT ml.undeploy('inj')`]);
  const deployInput = (expression: string, refusal: string | RegExp) =>
    attempt(`SELECT ml.deploy('inj', 'flowers', 'iris', $1, '{"p": "label"}')`,
      [JSON.stringify({ X: ['sl', 'sw', 'pl', expression] })], refusal, [`SELECT ml.undeploy('inj')`, `ALTER TABLE flowers DROP COLUMN p`]);
  const deployOutput = (column: string, output: string, refusal: string | RegExp) =>
    attempt(`SELECT ml.deploy('inj', 'flowers', 'iris', $1, $2)`, [IRIS_INPUTS, JSON.stringify({ [column]: output })], refusal,
      [`SELECT ml.undeploy('inj')`]);
  const backfill = (filter: string, refusal: string | RegExp) =>
    attempt(`SELECT ml.backfill('flowers', $1)`, [filter], refusal, [UNDO_BACKFILL]);

  // Keeps the queue row of the deploy's own backfill, the first one.
  const UNDO_BACKFILL = `DO $$ BEGIN
    EXECUTE format('DELETE FROM ml.%I WHERE pgscore_seq > 1', (SELECT '_queue_' || id FROM ml._deployments WHERE name = 'flowers'));
  END $$`;
  const NOT_AN_EXPRESSION = 'is neither a column of public.flowers nor an SQL expression over it';
  const CORPUS: [string, Attempt][] = [
    // Deployment names
    ['ml.deploy name with a quote', deployAs(`x'; DROP TABLE victim; --`, `deployment name 'x''; DROP TABLE victim; --' is not valid`)],
    ['ml.deploy name with a double quote', deployAs(`victim"; DROP TABLE victim; --`, `deployment name 'victim"; DROP TABLE victim; --' is not valid`)],
    ['ml.deploy name with a space', deployAs('a b', `deployment name 'a b' is not valid`)],
    ['ml.deploy empty name', deployAs('', `deployment name '' is not valid`)],
    ['ml.undeploy name', attempt(`SELECT ml.undeploy($1)`, [`flowers'; DROP TABLE victim; --`], `deployment "flowers'; DROP TABLE victim; --" does not exist`)],
    ['ml.backfill name', attempt(`SELECT ml.backfill($1)`, [`flowers'); DROP TABLE victim; --`], `deployment "flowers'); DROP TABLE victim; --" does not exist`)],
    ['ml.retry name', attempt(`SELECT ml.retry($1)`, [`flowers" OR 1=1 --`], `deployment "flowers" OR 1=1 --" does not exist`)],
    // Sources (regclass)
    ['source with a statement after it', deployOn('victim; DROP TABLE victim', 'invalid name syntax')],
    ['source with a quote', deployOn(`flowers'); DROP TABLE victim; --`, 'invalid name syntax')],
    ['source as a quoted identifier with a statement in it', deployOn(`"victim""; DROP TABLE victim; --"`, `relation "victim"; DROP TABLE victim; --" does not exist`)],
    ['source in ml', deployOn('ml._deployments', 'ml._deployments belongs to pgscore')],
    ['source that is a view', deployOn('canary_view', 'public.canary_view is not a table')],
    // Model references, names and aliases
    ['model reference with an alias that is a statement', deployModel(`iris@x'; DROP TABLE t; --`, `model iris has no alias "x'; DROP TABLE t; --"`)],
    ['model reference with a quote', deployModel(`iris'; DROP TABLE victim; --`, `model "iris'; DROP TABLE victim; --" is not registered`)],
    ['model reference with a version and a statement', deployModel('iris@1; DROP TABLE victim', `model iris has no alias "1; DROP TABLE victim"`)],
    ['model reference without a name', deployModel('@1', `model reference '@1' is not valid`)],
    ['ml.register_model name with a quote', attempt(`SELECT ml.register_model($1, '\\x00'::bytea)`, [`x'; DROP TABLE victim; --`],
      `model name 'x''; DROP TABLE victim; --' is not valid`)],
    ['ml.register_model name with "@"', attempt(`SELECT ml.register_model($1, '\\x00'::bytea)`, ['iris@2'], `model name 'iris@2' is not valid`)],
    ['ml.promote alias with a quote', attempt(`SELECT ml.promote('iris', 1, $1)`, [`staging'; DROP TABLE victim; --`],
      `alias 'staging''; DROP TABLE victim; --' is not valid`)],
    ['ml.promote name with a quote', attempt(`SELECT ml.promote($1, 1)`, [`iris'; DROP TABLE victim; --`], `model iris'; DROP TABLE victim; --@1 does not exist`)],
    ['ml.rollback name with a quote', attempt(`SELECT ml.rollback($1)`, [`iris'; DROP TABLE victim; --`], `model iris'; DROP TABLE victim; -- has no alias production`)],
    ['ml.rollback alias with a quote', attempt(`SELECT ml.rollback('iris', $1)`, [`production'; DROP TABLE victim; --`],
      `model iris has no alias production'; DROP TABLE victim; --`)],
    // Input expressions
    ['input closing the expression early', deployInput('1); DROP TABLE victim; --', 'expression (1); DROP TABLE victim; --) is refused')],
    ['input subquery', deployInput('(SELECT 1)', 'expression ((SELECT 1)) is refused: it contains a subquery')],
    ['input pg_sleep', deployInput('pg_sleep(1)', /expression \(pg_sleep\(1\)\) is refused|"pg_sleep\(1\)" is neither a column/)],
    ['input pg_sleep as a number', deployInput('pg_sleep(1)::text::real', 'expression (pg_sleep(1)::text::real) is refused')],
    ['input random()', deployInput('random()', 'expression (random()) is refused: random() is volatile')],
    ['input aggregate', deployInput('sum(pw)', 'expression (sum(pw)) is refused: sum(real) is an aggregate')],
    ['input set-returning function', deployInput('generate_series(1,2)', 'expression (generate_series(1,2)) is refused')],
    // Expressions resolve names under search_path pg_catalog, pg_temp: unqualified, a table of public does not exist.
    ['input reading another table', deployInput('(select secret from secrets)', 'relation "secrets" does not exist')],
    ['input reading another table, qualified', deployInput('(select secret from public.secrets)', 'expression ((select secret from public.secrets)) is refused')],
    ['input reading another table by regclass', deployInput(`'public.victim'::regclass::oid::int8::real`, 'is refused: it reads table public.victim')],
    ['input breaking out of the SELECT', deployInput('a) FROM victim; DROP TABLE victim; SELECT (1', 'is refused')],
    ['input dollar quote', deployInput('$$', 'expression ($$) is refused: it contains "$"')],
    ['input escape string', deployInput(`E'\\''`, `expression (E'\\'') is refused: escape string literals (E'...') are not accepted`)],
    ['input line comment', deployInput('pw -- comment', 'expression (pw -- comment) is refused: it contains a comment')],
    ['input block comment', deployInput('pw /* comment */', 'expression (pw /* comment */) is refused: it contains a comment')],
    ['input quoted identifier with a statement in it', deployInput(`"pw"" FROM victim; DROP TABLE victim; --"`, NOT_AN_EXPRESSION)],
    ['input column of another table', deployInput('victim.id', NOT_AN_EXPRESSION)],
    ['input calling canary()', deployInput('canary()', 'function canary() does not exist')],
    ['input calling canary(), qualified', deployInput('public.canary()', 'expression (public.canary()) is refused: public.canary() is volatile')],
    ['input calling canary() in a subquery', deployInput('(SELECT public.canary())', 'expression ((SELECT public.canary())) is refused')],
    ["input calling a stranger's stable function", deployInput('public.canary_stable(pw)',
      `expression (public.canary_stable(pw)) is refused: public.canary_stable(real) belongs to role ${STRANGER}`)],
    ['input reading a view through schema_to_xml', deployInput(`length(schema_to_xml('public', true, true, '')::text)`, 'is refused')],
    ['input running a query through query_to_xml', deployInput(`length(query_to_xml('SELECT public.canary()', true, true, '')::text)`, 'is refused')],
    // Output columns and outputs
    ['output spec with a statement', deployOutput('p', 'probabilities[0]); DROP TABLE victim; --',
      `outputs maps column "p" to "probabilities[0]); DROP TABLE victim; --"; expected an output name, optionally indexed, like "probabilities[1]"`)],
    ['output name with a statement', deployOutput('p', 'label; DROP TABLE victim',
      'outputs maps column "p" to "label; DROP TABLE victim", but model iris@1 has no output "label; DROP TABLE victim"')],
    ['output column longer than an identifier', deployOutput('x'.repeat(70), 'label', `"${'x'.repeat(70)}"`)],
    // Backfill filters
    ['filter with a statement after it', backfill('true; DROP TABLE victim', 'backfill filter: expression (true; DROP TABLE victim) is refused: it contains ";"')],
    ['filter closing the WHERE early', backfill('true) OR (1=1', 'backfill filter: expression (true) OR (1=1) is refused: it closes a parenthesis it did not open')],
    ['filter with a subquery', backfill('id IN (SELECT id FROM secrets)',
      'backfill filter "id IN (SELECT id FROM secrets)" is not a valid condition on public.flowers: relation "secrets" does not exist')],
    ['filter with a subquery, qualified', backfill('id IN (SELECT id FROM public.secrets)',
      'backfill filter: expression (id IN (SELECT id FROM public.secrets)) is refused')],
    ['filter with a UNION', backfill('true UNION SELECT id FROM secrets', 'backfill filter "true UNION SELECT id FROM secrets" is not a valid condition on public.flowers')],
    ['filter calling canary()', backfill('public.canary() > 0', 'backfill filter: expression (public.canary() > 0) is refused: public.canary() is volatile')],
    ['filter reading a view through schema_to_xml', backfill(`schema_to_xml('public', true, true, '') IS NOT NULL`, 'is refused')],
    ['filter calling random()', backfill('random() < 2', 'backfill filter: expression (random() < 2) is refused: random() is volatile')],
    ['filter calling pg_sleep', backfill('pg_sleep(1) IS NOT NULL', 'backfill filter: expression (pg_sleep(1) IS NOT NULL) is refused')],
    ['filter with an aggregate', backfill('sum(pw) > 0', 'backfill filter: expression (sum(pw) > 0) is refused')],
    ['filter that is not a condition', backfill('pw', 'backfill filter (pw) is not a condition (it gives real)')],
  ];

  it.each(CORPUS)('%s: refused, and nothing ran', async (_what, { sql, values, refusal, undo }) => {
    const before = await snapshot();
    const started = performance.now();
    let error: Error | undefined;
    try {
      await db.sql(sql, [...values]);
    } catch (caught) {
      error = caught as Error;
    }
    const ms = performance.now() - started;
    const after = await snapshot();
    if (!error) for (const statement of undo ?? []) await db.sql(statement, statement.includes('$1') ? [values[0]] : []);
    expect(error?.message ?? 'it succeeded').toMatch(typeof refusal === 'string' ? new RegExp(escapeRegExp(refusal)) : refusal);
    expect(after).toEqual(before);
    expect(after.victim_rows).toBe('3');
    // pg_sleep(1) would have slept: a second per row.
    if (values.some((value) => String(value).includes('pg_sleep'))) expect(ms).toBeLessThan(1000);
  });

  it('an output column name with quotes and a statement is a column of that name', async () => {
    const column = `x"; DROP TABLE victim; --`;
    const { pending: _pending, ...before } = await snapshot();
    await db.sql(`CREATE TABLE tulips (id int PRIMARY KEY, sl real, sw real, pl real, pw real)`);
    await db.sql(`INSERT INTO tulips VALUES (1, $1, $2, $3, $4), (2, $5, $6, $7, $8)`, [...SETOSA, ...VIRGINICA]);
    await db.sql(`SELECT ml.deploy('quoted', 'tulips', 'iris', $1, $2)`, [IRIS_INPUTS, JSON.stringify({ [column]: 'label' })]);
    const worker = await startWorker(db);
    try {
      const scored = async () => (await db.sql<Record<string, string | null>>(`SELECT * FROM tulips ORDER BY id`)).map((row) => row[column]);
      expect(await waitFor(async () => (await scored()).every(Boolean) && scored(), 'both rows scored')).toEqual(['setosa', 'virginica']);
    } finally {
      await worker.stop();
      await db.sql(`SELECT ml.undeploy('quoted')`);
      await db.sql(`DROP TABLE tulips`);
    }
    // The worker scored the queue of deployment flowers too: only its pending count changed.
    const { pending: _after, ...after } = await snapshot();
    expect(after).toEqual(before);
  });

  it('a legitimate filter queues the rows it selects', async () => {
    const before = await pending(db, 'flowers');
    const [queued] = await db.sql<{ n: string }>(`SELECT ml.backfill('flowers', 'sl > 6 AND name IS NULL') AS n`);
    expect(queued!.n).toBe('1');
    expect(await pending(db, 'flowers')).toBe(before + 1);
  });
});

describe('identifiers with quotes, spaces and dots deploy and score', () => {
  let db: TestDatabase;
  let worker: Worker;
  const TABLE = '"My Schema"."Weird ""Table"" name"';

  const predictions = () =>
    db.sql<{ species: string | null; p: number | null }>(
      `SELECT "Species (predicted)" AS species, "p ""setosa""" AS p FROM ${TABLE} ORDER BY "Row ID"`);

  beforeAll(async () => {
    db = await createTestDatabase();
    await push(db, 'iris', 'iris.onnx');
    await db.sql(`CREATE SCHEMA "My Schema"`);
    await db.sql(`CREATE TABLE ${TABLE} ("Row ID" int PRIMARY KEY, "Sepal Length" real, "sepal width" real, "Petal.Length" real,
                                         "petal ""width""" real)`);
    worker = await startWorker(db);
  });
  afterAll(async () => {
    await worker?.stop();
    await db?.drop();
  });

  it('deploys with columns and an expression over quoted names, and scores', async () => {
    const inputs = { X: ['Sepal Length', 'sepal width', '"Petal.Length" * 1', 'petal "width"'] };
    const outputs = { 'Species (predicted)': 'label', 'p "setosa"': 'probabilities[0]' };
    const [deployed] = await db.sql<{ status: string }>(`SELECT ml.deploy('weird', $1, 'iris', $2, $3) AS status`,
      [TABLE, JSON.stringify(inputs), JSON.stringify(outputs)]);
    expect(deployed!.status).toBe('active');
    expect(await db.sql(`SELECT source, inputs, outputs FROM ml.deployments`)).toEqual([{ source: TABLE, inputs, outputs }]);

    await db.sql(`INSERT INTO ${TABLE} VALUES (1, $1, $2, $3, $4), (2, $5, $6, $7, $8)`, [...SETOSA, ...VIRGINICA]);
    await waitFor(async () => (await predictions()).every((row) => row.species), 'both rows scored');
    const rows = await predictions();
    expect(rows.map((row) => row.species)).toEqual(['setosa', 'virginica']);
    expect(rows[0]!.p).toBeGreaterThan(0.9);
  });

  it('rescores on an update of a quoted input column, and backfills with a filter over quoted names', async () => {
    await db.sql(`UPDATE ${TABLE} SET "Sepal Length" = $1, "sepal width" = $2, "Petal.Length" = $3, "petal ""width""" = $4 WHERE "Row ID" = 1`,
      VIRGINICA);
    await waitFor(async () => (await predictions())[0]?.species === 'virginica', 'row 1 rescored');
    const [queued] = await db.sql<{ n: string }>(`SELECT ml.backfill('weird', '"Sepal Length" > 6 AND "petal ""width""" > 2') AS n`);
    expect(queued!.n).toBe('2');
    await waitFor(async () => (await pending(db, 'weird')) === 0, 'backfill scored');
    expect(await db.sql(`SELECT deployment, dead_letters FROM ml.status`)).toEqual([{ deployment: 'weird', dead_letters: '0' }]);
  });

  it('undeploys: its triggers leave the table', async () => {
    await db.sql(`SELECT ml.undeploy('weird')`);
    expect(await db.sql(`SELECT tgname FROM pg_trigger WHERE tgrelid = $1::regclass AND NOT tgisinternal`, [TABLE])).toEqual([]);
  });
});

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
