import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BatchFailure } from '../../src/worker/loop.js';
import type { Worker } from '../../src/worker/worker.js';
import { createTestDatabase, pending, push, startWorker, waitFor, type TestDatabase } from '../helpers/db.js';

const IRIS_INPUTS = '{"X": ["sl", "sw", "pl", "pw"]}';
const SETOSA = [5.1, 3.5, 1.4, 0.2];

interface DeploymentState {
  status: string;
  reason: string | null;
  source: string;
  inputs: unknown;
}

async function state(db: TestDatabase, name: string): Promise<DeploymentState> {
  const [row] = await db.sql<DeploymentState>('SELECT status, reason, source, inputs FROM ml.deployments WHERE deployment = $1', [name]);
  return row!;
}

async function triggers(db: TestDatabase, table: string): Promise<string[]> {
  const rows = await db.sql<{ tgname: string }>(
    `SELECT tgname FROM pg_trigger WHERE tgrelid = $1::regclass AND NOT tgisinternal ORDER BY tgname`, [table]);
  return rows.map((r) => r.tgname);
}

/**
 * Schema changes under a deployment never fail the application's statements (invariant 8): the
 * deployment follows what it can (renames, widening types) and otherwise turns invalid with the
 * reason, its triggers removed and its queued keys kept, until ml.deploy re-activates it.
 */
describe.each([
  { watched: true, how: 'event triggers' },
  { watched: false, how: 'no event triggers (the worker finds the change)' },
])('schema changes under a deployment, with $how', ({ watched }) => {
  let db: TestDatabase;
  let worker: Worker;
  const failures: BatchFailure[] = [];
  let table = 0;

  beforeAll(async () => {
    db = await createTestDatabase();
    if (!watched) await db.sql('DROP EVENT TRIGGER pgscore_alter_table; DROP EVENT TRIGGER pgscore_drop');
    await push(db, 'iris', 'iris.onnx');
    worker = await startWorker(db);
    worker.on('failure', (failure) => failures.push(failure));
  });
  afterAll(async () => {
    await worker?.stop();
    await db?.drop();
  });

  /** A deployed table with one scored row and `queued` rows queued while the deployment is idle. */
  async function deployed(): Promise<string> {
    const name = `t${++table}`;
    await db.sql(`CREATE TABLE ${name} (id int PRIMARY KEY, sl real, sw real, pl real, pw real, note text)`);
    await db.sql(`SELECT ml.deploy($1::text, $1::regclass, 'iris', $2, '{"species": "label"}')`, [name, IRIS_INPUTS]);
    await db.sql(`INSERT INTO ${name} VALUES (1, $1, $2, $3, $4)`, SETOSA);
    await waitFor(async () => (await db.sql(`SELECT 1 FROM ${name} WHERE species = 'setosa'`)).length === 1, 'first row scored');
    return name;
  }

  /** Waits until the deployment is in `status`: at once with event triggers, within seconds without. */
  const until = (name: string, status: string) =>
    waitFor(async () => {
      const s = await state(db, name);
      return s.status === status && s;
    }, `deployment ${name} ${status}`, 20_000);

  it('DROP COLUMN of an input: the deployment turns invalid with the reason; the application writes on', async () => {
    const t = await deployed();
    await db.sql(`ALTER TABLE ${t} DROP COLUMN pw`);
    const s = await until(t, 'invalid');
    expect(s.reason).toContain(`input column "pw" (model input "X") was dropped from public.${t}`);
    expect(await triggers(db, t)).toEqual([]);
    // Updates of other columns, inserts and input updates all succeed.
    await db.sql(`UPDATE ${t} SET note = 'still writable'`);
    await db.sql(`UPDATE ${t} SET sl = 6`);
    await db.sql(`INSERT INTO ${t} (id, sl, sw, pl) VALUES (2, 1, 2, 3)`);
    // The worker does not loop on the broken deployment.
    const before = failures.filter((f) => f.deployment === t).length;
    await db.sql(`SELECT pg_sleep(1.5)`);
    expect(failures.filter((f) => f.deployment === t).length - before).toBeLessThanOrEqual(1);
  });

  it('RENAME COLUMN of an input is followed: the deployment stays active and scores', async () => {
    const t = await deployed();
    await db.sql(`ALTER TABLE ${t} RENAME COLUMN sl TO sepal_length`);
    await waitFor(async () => JSON.stringify((await state(db, t)).inputs).includes('sepal_length'), 'mapping follows the rename', 20_000);
    expect(await state(db, t)).toMatchObject({ status: 'active', inputs: { X: ['sepal_length', 'sw', 'pl', 'pw'] } });
    await db.sql(`INSERT INTO ${t} VALUES (2, $1, $2, $3, $4)`, SETOSA);
    await waitFor(async () => (await db.sql(`SELECT 1 FROM ${t} WHERE id = 2 AND species = 'setosa'`)).length === 1, 'renamed input scored');
  });

  it('a widening type change keeps scoring; a change to text turns the deployment invalid', async () => {
    const t = await deployed();
    await db.sql(`ALTER TABLE ${t} ALTER COLUMN sw TYPE double precision`);
    await db.sql(`INSERT INTO ${t} VALUES (2, $1, $2, $3, $4)`, SETOSA);
    await waitFor(async () => (await db.sql(`SELECT 1 FROM ${t} WHERE id = 2 AND species = 'setosa'`)).length === 1, 'scored after widening');
    expect((await state(db, t)).status).toBe('active');

    await db.sql(`ALTER TABLE ${t} ALTER COLUMN pl TYPE text`);
    const s = await until(t, 'invalid');
    expect(s.reason).toContain('column "pl" is text, but model input "X" of iris@1 needs float32 values');
    await db.sql(`UPDATE ${t} SET pl = 'not a number'`);
  });

  it('DROP of a prediction column turns the deployment invalid; ml.deploy re-activates it with its queued keys', async () => {
    const t = await deployed();
    // Rows queued while no worker claims them: the deployment is re-checked before they score.
    await db.sql(`ALTER TABLE ${t} DROP COLUMN species`);
    const s = await until(t, 'invalid');
    expect(s.reason).toContain(`prediction column "species" (output "label") was dropped from public.${t}`);
    await db.sql(`INSERT INTO ${t} VALUES (2, $1, $2, $3, $4)`, SETOSA);
    const again = await db.sql<{ status: string }>(
      `SELECT ml.deploy($1::text, $1::regclass, 'iris', $2, '{"species": "label"}', '{"backfill": false}') AS status`, [t, IRIS_INPUTS]);
    expect(again).toEqual([{ status: 'active' }]);
    expect(await triggers(db, t)).toEqual([`pgscore_${t}_insert`, `pgscore_${t}_update`]);
    await db.sql(`SELECT ml.backfill($1)`, [t]);
    await waitFor(async () => (await db.sql(`SELECT 1 FROM ${t} WHERE species = 'setosa'`)).length === 2, 're-activated and scored');
  });

  it('a change that makes the table one pgscore refuses (inheritance, RLS, a trigger that would run as the worker) turns it invalid', async () => {
    const inherited = await deployed();
    await db.sql(`CREATE TABLE ${inherited}_child (PRIMARY KEY (id)) INHERITS (${inherited})`);
    expect((await until(inherited, 'invalid')).reason).toContain(
      `public.${inherited} has inheritance children (public.${inherited}_child): pgscore cannot tell their rows from the parent's`);
    const secured = await deployed();
    await db.sql(`ALTER TABLE ${secured} ENABLE ROW LEVEL SECURITY`);
    expect((await until(secured, 'invalid')).reason).toContain(`public.${secured} has row-level security enabled`);
    const triggered = await deployed();
    await db.sql(`CREATE FUNCTION ${triggered}_touch() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END'`);
    // The table owner's own function (a superuser's would be trusted, as in a CHECK).
    await db.sql(`DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pgscore_test_tenant') THEN CREATE ROLE pgscore_test_tenant; END IF; END $$`);
    await db.sql(`ALTER FUNCTION ${triggered}_touch() OWNER TO pgscore_test_tenant`);
    await db.sql(`CREATE TRIGGER touch BEFORE UPDATE ON ${triggered} FOR EACH ROW EXECUTE FUNCTION ${triggered}_touch()`);
    expect((await until(triggered, 'invalid')).reason).toContain(
      `trigger touch on public.${triggered} runs public.${triggered}_touch(): it would run during the write-back`);
    // Each statement succeeded, and the application writes on, unscored.
    for (const t of [inherited, secured, triggered]) await db.sql(`INSERT INTO ${t} (id, sl, sw, pl, pw) VALUES (2, 1, 2, 3, 4)`);
  });

  it('DROP TABLE marks the deployment dropped, keeps its name, removes its queue; ml.undeploy cleans up', async () => {
    const t = await deployed();
    const [{ id }] = (await db.sql<{ id: number }>('SELECT id FROM ml._deployments WHERE name = $1', [t])) as [{ id: number }];
    await db.sql(`DROP TABLE ${t}`);
    const s = await until(t, 'dropped');
    expect(s).toMatchObject({ source: `public.${t}`, reason: `table public.${t} was dropped` });
    expect(await db.sql(`SELECT to_regclass('ml._queue_${id}') AS queue`)).toEqual([{ queue: null }]);
    expect(await pending(db, t)).toBe(0);
    await db.sql('SELECT ml.undeploy($1)', [t]);
    expect(await db.sql('SELECT 1 FROM ml.deployments WHERE deployment = $1', [t])).toEqual([]);
  });
});

/**
 * Re-planning a deployment to compare it with its table costs tens of ms: the worker's re-check
 * of 1,000 deployments on every reload took 40 s of every 30. Where event triggers watch the
 * schema, each reload checks what fits its budget and the next goes on where it stopped; without
 * them, every deployment is checked every time.
 */
describe('the worker re-checks deployments within a budget', () => {
  let db: TestDatabase;

  beforeAll(async () => {
    db = await createTestDatabase();
    await push(db, 'iris', 'iris.onnx');
    for (const t of ['round_a', 'round_b', 'round_c']) {
      await db.sql(`CREATE TABLE ${t} (id int PRIMARY KEY, sl real, sw real, pl real, pw real)`);
      await db.sql(`SELECT ml.deploy($1::text, $1::text::regclass, 'iris', $2, '{"species": "label"}')`, [t, IRIS_INPUTS]);
    }
  });
  afterAll(async () => db?.drop());

  const recheck = async (after: number) =>
    (await db.sql<{ changed: number; next_after: number | null }>('SELECT * FROM ml._recheck_deployments($1, 0)', [after]))[0]!;

  it('with event triggers: one deployment per call at budget 0, round and round', async () => {
    const ids = (await db.sql<{ id: number }>(`SELECT id FROM ml._deployments ORDER BY id`)).map((r) => r.id);
    const seen: (number | null)[] = [];
    let after = 0;
    for (let i = 0; i < 4; i++) {
      const { next_after } = await recheck(after);
      seen.push(next_after);
      after = next_after ?? 0;
    }
    // The last deployment exceeds the budget too; the call after it finds none left: NULL.
    expect(seen).toEqual([ids[0], ids[1], ids[2], null]);
  });

  it('without event triggers: every deployment, whatever the budget; a change is found at once', async () => {
    await db.sql('DROP EVENT TRIGGER pgscore_alter_table; DROP EVENT TRIGGER pgscore_drop');
    await db.sql('ALTER TABLE round_c DROP COLUMN pw');
    expect(await recheck(0)).toEqual({ changed: 1, next_after: null });
    expect((await state(db, 'round_c')).status).toBe('invalid');
  });
});
