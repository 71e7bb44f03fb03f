import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPool } from '../../src/db/pool.js';
import { fetchModelBytes } from '../../src/db/model-bytes.js';
import { SessionCache } from '../../src/models/sessions.js';
import { claimAndScore, type ModelSource } from '../../src/pipeline/batch.js';
import { ClaimSizer } from '../../src/queue/claim.js';
import { loadDeployments } from '../../src/worker/deployments.js';
import { createTestDatabase, pending, quietLog, type TestDatabase } from '../helpers/db.js';
import { createSumsTable, registerSums, SUMS_INPUTS, SUMS_OUTPUTS } from '../helpers/sums.js';

/**
 * The generated suite's F10: a row scored right after it was fixed kept the dead letter of its
 * bad version. Two batches of one deployment: A read the bad version; the application fixed the
 * row; B read the fixed version, wrote its prediction and cleared the row's dead letters; then A
 * recorded its dead letter. A dead letter now follows newest-wins as a prediction does: it is
 * recorded only for the version that was read. The race is driven here step by step: A waits
 * for its model (after its claim) until B has committed.
 */
describe('a dead letter of a row version that changed while its batch scored', () => {
  let db: TestDatabase;
  let pool: ReturnType<typeof createPool>;
  let models: SessionCache;

  beforeAll(async () => {
    db = await createTestDatabase();
    await registerSums(db);
    await createSumsTable(db, 'orders');
    await db.sql(`SELECT ml.deploy('orders', 'orders', 'sums', $1, $2)`, [SUMS_INPUTS, SUMS_OUTPUTS]);
    pool = createPool(db.workerUrl, { max: 4, name: 'test' });
    models = new SessionCache((name, version) => fetchModelBytes(pool, name, version), { threads: 1 });
  });
  afterAll(async () => {
    await models?.close();
    await pool?.end();
    await db?.drop();
  });

  it('is not recorded: the fixed version keeps its prediction and no dead letter', async () => {
    // c NaN: the model's input takes finite numbers, so this version becomes a dead letter.
    await db.sql(`INSERT INTO orders VALUES (1, 1, 2, 'NaN', 4, 1005, true, 't')`);
    const [deployment] = await loadDeployments(pool, models, quietLog);

    let entered!: () => void;
    const claimed = new Promise<void>((resolve) => (entered = resolve));
    let open!: () => void;
    const gate = new Promise<void>((resolve) => (open = resolve));
    const waiting: ModelSource = {
      async get(name, version) {
        entered();
        await gate;
        return models.get(name, version);
      },
    };

    const a = claimAndScore(pool, deployment!, waiting, 100, new ClaimSizer(100));
    await claimed;
    await db.sql(`UPDATE orders SET c = 3 WHERE id = 1`);
    const b = await claimAndScore(pool, deployment!, models, 100, new ClaimSizer(100));
    expect(b.written).toBe(1);
    open();
    const first = await a;
    expect({ written: first.written, dead: first.dead }).toEqual({ written: 0, dead: 0 });

    // A put its row back on the queue; the next batch finds the fixed version again.
    await drain(deployment!);
    expect(await db.sql(`SELECT total FROM orders`)).toEqual([{ total: 1 + 2 + 3 + 4 + 1005 + 1 }]);
    expect(await db.sql(`SELECT reason FROM ml.errors WHERE deployment = 'orders'`)).toEqual([]);
  });

  it('an input expression failing on a row the application holds locked: the row waits for it, then the version it leaves decides', async () => {
    await db.sql(`CREATE TABLE typed_in_text (id int PRIMARY KEY, a real, b text, c float8, d int, e bigint, ok bool, tag text)`);
    await db.sql(`SELECT ml.deploy('typed_in_text', 'typed_in_text', 'sums', $1, $2)`,
      ['{"f32": ["a", "b::real"], "f64": "c", "i32": "d", "i64": "e", "flag": "ok", "tag": "tag"}', SUMS_OUTPUTS]);
    await db.sql(`INSERT INTO typed_in_text VALUES (1, 1, 'abc', 3, 4, 1005, true, 't'), (2, 1, 'abc', 3, 4, 1005, true, 't')`);
    const deployment = (await loadDeployments(pool, models, quietLog)).find((d) => d.name === 'typed_in_text')!;
    const errors = async () => (await db.sql<{ key: number }>(
      `SELECT (row_key->>'id')::int AS key FROM ml.errors WHERE deployment = 'typed_in_text' ORDER BY 1`)).map((r) => r.key);

    const app = new pg.Client({ connectionString: db.url });
    await app.connect();
    try {
      await app.query('BEGIN');
      await app.query('SELECT * FROM typed_in_text FOR UPDATE');
      // Locked rows whose read fails are not judged: they go back to the queue.
      const batch = await claimAndScore(pool, deployment, models, 100, new ClaimSizer(100));
      expect({ written: batch.written, dead: batch.dead }).toEqual({ written: 0, dead: 0 });
      expect(await errors()).toEqual([]);
      expect(await pending(db, 'typed_in_text')).toBe(2);
      // The application fixes row 1 and leaves row 2 as it was.
      await app.query(`UPDATE typed_in_text SET b = '2' WHERE id = 1`);
      await app.query('COMMIT');
    } finally {
      await app.end();
    }
    await drain(deployment);
    expect(await db.sql(`SELECT id, total FROM typed_in_text ORDER BY id`)).toEqual([
      { id: 1, total: 1 + 2 + 3 + 4 + 1005 + 1 },
      { id: 2, total: null },
    ]);
    expect(await errors()).toEqual([2]);
  });

  /** Runs batches until the deployment's queue is empty (rows put back are due a second later). */
  async function drain(deployment: Awaited<ReturnType<typeof loadDeployments>>[number]): Promise<void> {
    const deadline = Date.now() + 30_000;
    while ((await pending(db, deployment.name)) > 0) {
      if (Date.now() > deadline) throw new Error(`${deployment.name} did not drain`);
      const { claimed } = await claimAndScore(pool, deployment, models, 100, new ClaimSizer(100));
      if (claimed === 0) await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
});
