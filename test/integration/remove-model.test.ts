import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pgscore } from '../helpers/cli.js';
import { createTestDatabase, push, type TestDatabase } from '../helpers/db.js';

const INPUTS = '{"X": ["sl", "sw", "pl", "pw"]}';

/** ml.remove_model: what a DBA used a superuser's DELETE for, with the checks a DELETE lacks. */
describe('ml.remove_model', () => {
  let db: TestDatabase;
  const suffix = randomBytes(4).toString('hex');
  const admin = `remover_${suffix}`;
  const outsider = `outsider_${suffix}`;

  beforeAll(async () => {
    db = await createTestDatabase();
    await db.sql(`CREATE ROLE ${admin} LOGIN PASSWORD 'pw' IN ROLE pgscore_admin`);
    await db.sql(`CREATE ROLE ${outsider} LOGIN PASSWORD 'pw'`);
    await db.sql(`GRANT USAGE ON SCHEMA ml TO ${outsider}`);
    await db.sql(`CREATE TABLE flowers (id int PRIMARY KEY, sl real, sw real, pl real, pw real)`);
    await db.sql(`ALTER TABLE flowers OWNER TO ${admin}`);
  });
  afterAll(async () => {
    await db?.drop();
    const cleanup = new pg.Client({ connectionString: db.url.replace(/\/[^/?]+(\?|$)/, '/postgres$1') });
    await cleanup.connect();
    await cleanup.query(`DROP ROLE IF EXISTS ${admin}`).catch(() => undefined);
    await cleanup.query(`DROP ROLE IF EXISTS ${outsider}`).catch(() => undefined);
    await cleanup.end();
  });

  /** Runs one statement as a role; returns its notices, or throws its error. */
  const as = async (role: string, text: string): Promise<{ rows: Record<string, unknown>[]; notices: string[] }> => {
    const url = new URL(db.url);
    url.username = role;
    url.password = 'pw';
    const client = new pg.Client({ connectionString: url.toString() });
    const notices: string[] = [];
    client.on('notice', (n) => notices.push(n.message ?? ''));
    await client.connect();
    try {
      return { rows: (await client.query(text)).rows, notices };
    } finally {
      await client.end();
    }
  };
  const refusal = (role: string, text: string) =>
    as(role, text).then(
      () => { throw new Error(`no error from ${text}`); },
      (error: pg.DatabaseError) => ({ code: error.code, message: error.message, hint: error.hint }),
    );
  const versions = async (name: string) =>
    (await db.sql<{ version: number; aliases: string[] }>('SELECT version, aliases FROM ml.models WHERE name = $1 ORDER BY version', [name]))
      .map((m) => `${m.version}${m.aliases.length ? `(${m.aliases.join(',')})` : ''}`);

  it('removes an unused version, keeps a record of it, and never gives its number again', async () => {
    for (let i = 0; i < 3; i++) await push(db, 'petals', 'iris.onnx');
    await db.sql(`SELECT ml.set_baseline('petals@3', 'SELECT 1.0::real AS a, 2.0::real AS b, 3.0::real AS c, 4.0::real AS d')`);
    const { rows } = await as(admin, `SELECT ml.remove_model('petals', 3) AS removed`);
    expect(rows).toEqual([{ removed: 1 }]);
    expect(await versions('petals')).toEqual(['1(production)', '2']);
    expect(await db.sql(`SELECT version FROM ml._baselines WHERE model = 'petals'`)).toEqual([]);
    expect(await db.sql(`SELECT name, version, removed_by FROM ml._removed_models`)).toEqual([{ name: 'petals', version: 3, removed_by: admin }]);
    expect(await push(db, 'petals', 'iris.onnx')).toBe(4);
  });

  it('says what does not exist', async () => {
    expect(await refusal(admin, `SELECT ml.remove_model('petals', 3)`))
      .toEqual({ code: 'P0002', message: 'model petals@3 does not exist (versions: 1, 2, 4)', hint: undefined });
    expect(await refusal(admin, `SELECT ml.remove_model('nothing')`))
      .toEqual({ code: 'P0002', message: "model 'nothing' is not registered", hint: undefined });
  });

  it('is for pgscore_admin members only: another role gets permission denied, and DELETE is no way around it', async () => {
    expect((await refusal(outsider, `SELECT ml.remove_model('petals', 4)`)).code).toBe('42501');
    expect((await refusal(admin, `DELETE FROM ml._models WHERE name = 'petals'`)).code).toBe('42501');
    expect(await versions('petals')).toEqual(['1(production)', '2', '4']);
  });

  it('refuses a version a deployment scores with: pinned, through the alias it follows, as a variant or as its shadow', async () => {
    await push(db, 'iris', 'iris.onnx');
    await push(db, 'iris', 'iris.onnx');
    await push(db, 'iris', 'iris.onnx');
    await as(admin, `SELECT ml.deploy('pinned', 'flowers', 'iris@2', '${INPUTS}', '{"p_species": "label"}')`);
    expect(await refusal(admin, `SELECT ml.remove_model('iris', 2)`)).toEqual({
      code: '55006',
      message: 'model iris@2 is in use: deployment "pinned" scores with iris@2',
      hint: "Undeploy it (ml.undeploy('pinned')) or point it at another version first (ml.promote, or deploy it pinned to another version).",
    });
    await as(admin, `SELECT ml.undeploy('pinned')`);

    await as(admin, `SELECT ml.deploy('follower', 'flowers', 'iris', '${INPUTS}', '{"f_species": "label"}')`);
    expect(await refusal(admin, `SELECT ml.remove_model('iris', 1)`)).toMatchObject({
      code: '55006', message: 'model iris@1 is in use: deployment "follower" scores with iris@production',
    });
    // The whole model is refused too, and nothing is removed.
    expect(await refusal(admin, `SELECT ml.remove_model('iris')`)).toMatchObject({
      code: '55006', message: 'model iris@1 is in use: deployment "follower" scores with iris@production',
    });
    await as(admin, `SELECT ml.undeploy('follower')`);

    await as(admin, `SELECT ml.deploy('ab', 'flowers', 'iris@1', '${INPUTS}', '{"ab_species": "label"}', '{"variants": {"iris@1": 50, "iris@3": 50}}')`);
    expect(await refusal(admin, `SELECT ml.remove_model('iris', 3)`)).toEqual({
      code: '55006',
      message: 'model iris@3 is in use: deployment "ab" splits its rows to iris@3',
      hint: "End the split first: ml.split('ab', NULL), or a split without iris@3.",
    });
    await as(admin, `SELECT ml.undeploy('ab')`);

    await as(admin, `SELECT ml.deploy('dark', 'flowers', 'iris@1', '${INPUTS}', '{"d_species": "label"}', '{"shadow": "iris@2"}')`);
    expect(await refusal(admin, `SELECT ml.remove_model('iris', 2)`)).toEqual({
      code: '55006',
      message: 'model iris@2 is in use: deployment "dark" shadows with iris@2',
      hint: "Promote the shadow (ml.promote_shadow('dark')), or undeploy and deploy again without it.",
    });
    await as(admin, `SELECT ml.undeploy('dark')`);
    expect(await versions('iris')).toEqual(['1(production)', '2', '3']);
  });

  it('takes removed versions out of alias history; an alias no deployment follows goes back to its previous version', async () => {
    await as(admin, `SELECT ml.promote('iris', 2), ml.promote('iris', 3), ml.promote('iris', 3, 'staging')`);
    expect(await db.sql(`SELECT alias, version, history FROM ml._aliases WHERE model = 'iris' ORDER BY alias`)).toEqual([
      { alias: 'production', version: 3, history: [1, 2] },
      { alias: 'staging', version: 3, history: [] },
    ]);
    const { notices } = await as(admin, `SELECT ml.remove_model('iris', 2)`);
    expect(notices).toEqual([]);
    expect(await db.sql(`SELECT alias, version, history FROM ml._aliases WHERE model = 'iris' ORDER BY alias`)).toEqual([
      { alias: 'production', version: 3, history: [1] },
      { alias: 'staging', version: 3, history: [] },
    ]);
    const removed = await as(admin, `SELECT ml.remove_model('iris', 3)`);
    expect(removed.notices).toEqual(['alias iris@production points at version 1 again', 'alias iris@staging is removed: it had no other version']);
    expect(await db.sql(`SELECT alias, version, history FROM ml._aliases WHERE model = 'iris' ORDER BY alias`)).toEqual([
      { alias: 'production', version: 1, history: [] },
    ]);
    // A rollback has nowhere to go now, rather than to a removed version.
    expect((await refusal(admin, `SELECT ml.rollback('iris')`)).message).toBe('alias iris@production has no earlier version to roll back to');
  });

  it('pgscore model remove calls it: the refusal and its hint on stderr with exit code 1, notices and the result on stdout', async () => {
    await as(admin, `SELECT ml.promote('petals', 2)`);
    await as(admin, `SELECT ml.deploy('petal_pin', 'flowers', 'petals@4', '${INPUTS}', '{"pp_species": "label"}')`);
    const refused = await pgscore(['model', 'remove', 'petals', '4'], { DATABASE_URL: db.url });
    expect(refused).toEqual({
      code: 1,
      stdout: '',
      stderr: 'pgscore: model petals@4 is in use: deployment "petal_pin" scores with petals@4\n' +
        "hint: Undeploy it (ml.undeploy('petal_pin')) or point it at another version first (ml.promote, or deploy it pinned to another version).\n",
    });
    await as(admin, `SELECT ml.undeploy('petal_pin')`);
    expect(await pgscore(['model', 'remove', 'petals', '2'], { DATABASE_URL: db.url }))
      .toEqual({ code: 0, stdout: 'alias petals@production points at version 1 again\nremoved petals@2\n', stderr: '' });
    expect(await pgscore(['model', 'remove', 'petals'], { DATABASE_URL: db.url }))
      .toEqual({ code: 0, stdout: 'alias petals@production is removed: it had no other version\nremoved petals (2 versions)\n', stderr: '' });
  });

  it('removes every version of a model once nothing uses it', async () => {
    const { rows } = await as(admin, `SELECT ml.remove_model('iris') AS removed`);
    expect(rows).toEqual([{ removed: 1 }]);
    expect(await db.sql(`SELECT * FROM ml.models WHERE name = 'iris'`)).toEqual([]);
    expect(await db.sql(`SELECT * FROM ml._aliases WHERE model = 'iris'`)).toEqual([]);
    expect(await push(db, 'iris', 'iris.onnx')).toBe(4);
  });
});
