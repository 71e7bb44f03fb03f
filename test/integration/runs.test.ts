import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Worker } from '../../src/worker/worker.js';
import { pgscore } from '../helpers/cli.js';
import { createTestDatabase, pending, startWorker, waitFor, type TestDatabase } from '../helpers/db.js';
import { createSumsTable, insertSums, registerSums, SUMS_INPUTS as INPUTS, SUMS_OUTPUTS as OUTPUTS, V1, V2 } from '../helpers/sums.js';

interface Run {
  run: string;
  deployment: string;
  kind: string;
  model: string;
  state: string;
  rows: string;
  scored: string;
  progress: number;
  dead_letters: string;
  scheduled_for: Date | null;
}

/** Batch deployments, schedules, side tables and runs (ml.runs, ml.run_now, rescore on promote). */
describe('runs', () => {
  let db: TestDatabase;
  const workers: Worker[] = [];

  beforeAll(async () => {
    db = await createTestDatabase();
    await registerSums(db);
  });
  afterAll(async () => {
    await Promise.all(workers.map((w) => w.stop()));
    await db?.drop();
  });

  const table = async (name: string, rows: number) => {
    await createSumsTable(db, name);
    await insertSums(db, name, 1, rows);
  };
  const runs = (deployment: string) => db.sql<Run>(`SELECT * FROM ml.runs WHERE deployment = $1 ORDER BY run`, [deployment]);
  const finished = (deployment: string, count: number) =>
    waitFor(async () => {
      const list = await runs(deployment);
      return list.length === count && list.every((r) => r.state === 'finished') && list;
    }, `${count} finished run(s) of ${deployment}`);

  it('a batch deployment appends one row per source row and run to its side table, and leaves the source untouched', async () => {
    await table('accounts', 500);
    const columnsBefore = await db.sql(`SELECT attname FROM pg_attribute WHERE attrelid = 'accounts'::regclass AND attnum > 0 ORDER BY attnum`);
    await db.sql(`SELECT ml.deploy('weekly', 'accounts', 'sums', $1, $2, '{"mode": "batch", "target": "weekly_totals", "filter": "id <= 400"}')`,
      [INPUTS, OUTPUTS]);
    workers.push(await startWorker(db));
    // No triggers, no initial backfill: writes queue nothing.
    expect(await db.sql(`SELECT tgname FROM pg_trigger WHERE tgrelid = 'accounts'::regclass AND NOT tgisinternal`)).toEqual([]);
    await db.sql(`UPDATE accounts SET d = d + 1 WHERE id = 1`);
    expect(await pending(db, 'weekly')).toBe(0);

    const [{ run }] = (await db.sql<{ run: string }>(`SELECT ml.run_now('weekly') AS run`)) as [{ run: string }];
    await finished('weekly', 1);
    await db.sql(`SELECT ml.run_now('weekly')`);
    const list = await finished('weekly', 2);
    expect(list[0]).toMatchObject({ run, kind: 'manual', model: 'sums@1', rows: '400', scored: '400', progress: 1, dead_letters: '0' });
    const [history] = await db.sql<{ rows: string; keys: string; runs: string; wrong: string; models: string[] }>(`
      SELECT count(*) AS rows, count(DISTINCT w.id) AS keys, count(DISTINCT w.scored_at) AS runs,
             count(*) FILTER (WHERE w.total <> s.a + s.b + s.c + s.d + s.e + s.ok::int) AS wrong,
             array_agg(DISTINCT w.model) AS models
        FROM weekly_totals w JOIN accounts s ON s.id = w.id`);
    expect(history).toEqual({ rows: '800', keys: '400', runs: '2', wrong: '0', models: ['sums@1'] });
    // The source table got no prediction or provenance columns.
    expect(await db.sql(`SELECT attname FROM pg_attribute WHERE attrelid = 'accounts'::regclass AND attnum > 0 ORDER BY attnum`)).toEqual(columnsBefore);
    // The worker may append to the side table, not read or change it.
    const [grants] = await db.sql<{ insert: boolean; select: boolean; update: boolean }>(`
      SELECT has_table_privilege('pgscore_worker', 'weekly_totals', 'INSERT') AS insert,
             has_table_privilege('pgscore_worker', 'weekly_totals', 'SELECT') AS select,
             has_table_privilege('pgscore_worker', 'weekly_totals', 'UPDATE') AS update`);
    expect(grants).toEqual({ insert: true, select: false, update: false });
  });

  it('a schedule fires once per fire time, even with two workers running', async () => {
    await table('nightly', 300);
    await db.sql(`SELECT ml.deploy('nightly', 'nightly', 'sums', $1, $2, '{"mode": "batch", "schedule": "0 2 * * *", "timezone": "Europe/Paris"}')`,
      [INPUTS, OUTPUTS]);
    expect(await runs('nightly')).toEqual([]);
    // Deployed two days ago: last night's 02:00 (Paris) was missed, and fires once, now.
    await db.sql(`UPDATE ml._deployments SET created_at = now() - interval '2 days' WHERE name = 'nightly'`);
    workers.push(await startWorker(db));
    const [run] = await finished('nightly', 1);
    await new Promise((resolve) => setTimeout(resolve, 3000));
    const list = await runs('nightly');
    expect(list).toHaveLength(1);
    const [expected] = await db.sql<{ at: Date }>(`
      SELECT CASE WHEN t <= now() THEN t ELSE t - interval '1 day' END AS at
        FROM (SELECT (date_trunc('day', now() AT TIME ZONE 'Europe/Paris') + interval '2 hours') AT TIME ZONE 'Europe/Paris' AS t) x`);
    expect(run).toMatchObject({ kind: 'schedule', rows: '300', scored: '300', state: 'finished' });
    expect(run!.scheduled_for).toEqual(expected!.at);
    expect(await db.sql(`SELECT count(*)::int AS n FROM nightly WHERE total = ${V1} AND nightly_model = 'sums@1'`)).toEqual([{ n: 300 }]);
  });

  it('rescores every row after ml.promote when asked, as a run; a run shows its progress and is cancelled by undeploy', async () => {
    await table('rescored', 2000);
    await db.sql(`SELECT ml.deploy('rescored', 'rescored', 'sums', $1, $2, '{"rescore_on_promote": true}')`, [INPUTS, OUTPUTS]);
    await finished('rescored', 1);
    expect((await runs('rescored'))[0]).toMatchObject({ kind: 'backfill', rows: '2000', scored: '2000' });
    await db.sql(`SELECT ml.promote('sums', 2)`);
    const list = await finished('rescored', 2);
    expect(list[1]).toMatchObject({ kind: 'promote', model: 'sums@2', rows: '2000', scored: '2000' });
    expect(await db.sql(`SELECT count(*)::int AS n FROM rescored WHERE total = ${V2} AND rescored_model = 'sums@2'`)).toEqual([{ n: 2000 }]);
    // A rollback is a promotion too: the rows are rescored by version 1 again.
    await db.sql(`SELECT ml.rollback('sums')`);
    expect((await finished('rescored', 3))[2]).toMatchObject({ kind: 'promote', model: 'sums@1', scored: '2000' });
    expect(await db.sql(`SELECT count(*)::int AS n FROM rescored WHERE total = ${V1} AND rescored_model = 'sums@1'`)).toEqual([{ n: 2000 }]);

    // With no worker running, a run waits at 0 %; undeploy cancels it.
    await Promise.all(workers.splice(0).map((w) => w.stop()));
    const [{ run }] = (await db.sql<{ run: string }>(`SELECT ml.run_now('rescored') AS run`)) as [{ run: string }];
    expect((await runs('rescored')).at(-1)).toMatchObject({ run, state: 'running', rows: '2000', scored: '0', progress: 0 });
    expect(await pending(db, 'rescored')).toBe(2000);
    await db.sql(`SELECT ml.undeploy('rescored')`);
    await db.sql(`SELECT ml._finish_runs()`);
    expect((await runs('rescored')).at(-1)).toMatchObject({ run, state: 'cancelled' });
  });

  it('pgscore backfill --watch follows the run with a progress bar; pgscore runs lists runs', async () => {
    await table('watched', 5000);
    await db.sql(`SELECT ml.deploy('watched', 'watched', 'sums', $1, $2, '{"backfill": false}')`, [INPUTS, OUTPUTS]);
    if (workers.length === 0) workers.push(await startWorker(db));
    const env = { DATABASE_URL: db.url, PGSCORE_LOG_LEVEL: 'warn' };
    const backfill = await pgscore(['backfill', 'watched', '--filter', 'id > 1000', '--watch'], env);
    expect(backfill.stderr).toMatch(/watched run \d+ \|.*\| 100% \| 4000\/4000 rows/);
    expect(backfill.code).toBe(0);
    expect(backfill.stdout).toMatch(/^run \d+ of watched: 4000 row\(s\) queued\n/);
    expect(backfill.stdout).toMatch(/│ watched\s+│ backfill │ sums@1 │ finished │ 4000\/4000 │ 100\.0 %/);
    expect(await db.sql(`SELECT count(*)::int AS n FROM watched WHERE total IS NOT NULL`)).toEqual([{ n: 4000 }]);

    const listed = await pgscore(['runs', '--deployment', 'watched', '--json'], env);
    expect(listed.code).toBe(0);
    expect(JSON.parse(listed.stdout)).toMatchObject([{ deployment: 'watched', kind: 'backfill', state: 'finished', rows: '4000', scored: '4000' }]);
    const missing = await pgscore(['run-now', 'nope'], env);
    expect(missing).toMatchObject({ code: 1, stderr: 'pgscore: deployment "nope" does not exist\n' });
  });

  it('a side table that is dropped or altered turns its deployment invalid with the reason; ml.deploy brings it back', async () => {
    await table('sided', 100);
    const deploy = () => db.sql(`SELECT ml.deploy('sided', 'sided', 'sums', $1, $2, '{"mode": "batch", "target": "sided_history"}')`,
      [INPUTS, OUTPUTS]);
    await deploy();
    const state = async () => (await db.sql<{ status: string; reason: string | null }>(
      `SELECT status, reason FROM ml.deployments WHERE deployment = 'sided'`))[0];
    await db.sql(`ALTER TABLE sided_history ALTER COLUMN total TYPE text`);
    expect(await state()).toEqual({
      status: 'invalid',
      reason: 'after ALTER TABLE public.sided_history: column "total" of target table public.sided_history is text, but it holds output "total" (double precision)',
    });
    await db.sql(`DROP TABLE sided_history`);
    await deploy();
    expect(await state()).toEqual({ status: 'active', reason: null });
    await db.sql(`DROP TABLE sided_history`);
    expect(await state()).toEqual({ status: 'invalid', reason: 'after DROP TABLE: target table public.sided_history does not exist' });
    await deploy();
    if (workers.length === 0) workers.push(await startWorker(db));
    await db.sql(`SELECT ml.run_now('sided')`);
    await finished('sided', 1);
    expect(await db.sql(`SELECT count(*)::int AS n FROM sided_history`)).toEqual([{ n: 100 }]);
  });

  it('on a partitioned table: a split with a shadow writes back by key, and a side table gets one row per run', async () => {
    await db.sql(`CREATE TABLE psums (id int, a real, b real, c float8, d int, e bigint, ok bool, tag text, PRIMARY KEY (id, tag))
                  PARTITION BY LIST (tag)`);
    await db.sql(`CREATE TABLE psums_t PARTITION OF psums FOR VALUES IN ('t')`);
    await db.sql(`CREATE TABLE psums_u PARTITION OF psums FOR VALUES IN ('u')`);
    await insertSums(db, 'psums', 1, 1000);
    await db.sql(`UPDATE psums SET tag = 'u' WHERE id % 3 = 0`);
    if (workers.length === 0) workers.push(await startWorker(db));
    await db.sql(`SELECT ml.deploy('psplit', 'psums', 'sums', $1, $2, '{"variants": {"sums@1": 70, "sums@2": 30}, "shadow": "sums@2"}')`,
      [INPUTS, OUTPUTS]);
    await db.sql(`SELECT ml.deploy('pnightly', 'psums', 'sums', $1, '{"nightly_total": "total"}', '{"mode": "batch", "target": "psums_history"}')`,
      [INPUTS]);
    await finished('psplit', 1);
    expect(await db.sql(`SELECT count(*)::int AS n FROM psums
                          WHERE total IS DISTINCT FROM CASE psplit_model WHEN 'sums@1' THEN ${V1} WHEN 'sums@2' THEN ${V2} END`)).toEqual([{ n: 0 }]);
    await db.sql(`SELECT ml.run_now('pnightly')`);
    await finished('pnightly', 1);
    await db.sql(`SELECT ml.run_now('pnightly')`);
    await finished('pnightly', 2);
    expect(await db.sql(`SELECT count(*)::int AS n, count(DISTINCT (h.id, h.tag))::int AS keys,
                                count(*) FILTER (WHERE h.nightly_total <> s.a + s.b + s.c + s.d + s.e + s.ok::int)::int AS wrong
                           FROM psums_history h JOIN psums s USING (id, tag)`)).toEqual([{ n: 2000, keys: 1000, wrong: 0 }]);
    await waitFor(async () => (await db.sql(`SELECT 1 FROM ml.compare WHERE deployment = 'psplit' AND role = 'shadow' AND rows = 1000`)).length === 1,
      'the shadow logged');
  });
});
