import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Worker } from '../../src/worker/worker.js';
import { createTestDatabase, pending, push, startWorker, waitFor, type TestDatabase } from '../helpers/db.js';
import { pgscore } from '../helpers/cli.js';
import { serveWorkerMetrics } from '../helpers/scrape.js';
import { createSumsTable, insertSums, registerSums, SUMS_INPUTS, SUMS_OUTPUTS } from '../helpers/sums.js';

const IRIS_INPUTS = '{"X": ["sl", "sw", "pl", "pw"]}';
const IRIS_OUTPUTS = '{"species": "label", "p_setosa": "probabilities[0]"}';
/** Deterministic, well-mixed values over the iris measurements' ranges (g is the row number). */
const U = (g: string, salt: string) => `((hashtext((${g})::text || '${salt}')::bigint & 65535) / 65536.0)`;
const FLOWER = (g: string, shift = '0') =>
  `4.3 + 3.6 * ${U(g, 'a')}, 2.0 + 2.4 * ${U(g, 'b')}, 1.0 + 5.9 * ${U(g, 'c')} + ${shift}, 0.1 + 2.4 * ${U(g, 'd')}`;

interface DriftRow {
  deployment: string;
  model: string;
  kind: string;
  feature: string;
  window: string;
  rows: string;
  psi: number;
  null_share: number;
  out_of_range_share: number;
  drifted: boolean;
}

/** The population stability index, computed here by hand from the baseline's edges and shares. */
function psiByHand(edges: number[], freqs: number[], values: number[]): number {
  const counts = new Array<number>(edges.length + 1).fill(0);
  for (const v of values) counts[edges.filter((e) => e <= v).length]! += 1;
  let psi = 0;
  counts.forEach((c, i) => {
    const a = Math.max(c / values.length, 1e-4);
    const e = Math.max(freqs[i]!, 1e-4);
    psi += (a - e) * Math.log(a / e);
  });
  return psi;
}

interface Alert {
  deployment: string;
  alert: string;
  state: string;
  detail: Record<string, unknown>;
}

describe('data drift', () => {
  let db: TestDatabase;
  let worker: Worker;
  let listener: pg.Client;
  const alerts: Alert[] = [];

  beforeAll(async () => {
    db = await createTestDatabase();
    await push(db, 'iris', 'iris.onnx');
    await registerSums(db);
    await db.sql(`CREATE TABLE training (sl real, sw real, pl real, pw real)`);
    await db.sql(`INSERT INTO training SELECT ${FLOWER('g')} FROM generate_series(1, 5000) g`);
    // What an application does to hear of alerts.
    listener = new pg.Client({ connectionString: db.url });
    await listener.connect();
    listener.on('notification', (n) => n.channel === 'pgscore_alerts' && alerts.push(JSON.parse(n.payload!)));
    await listener.query('LISTEN pgscore_alerts');
    worker = await startWorker(db);
  });
  afterAll(async () => {
    await listener?.end();
    await worker?.stop();
    await db?.drop();
  });

  const drift = (deployment: string) =>
    db.sql<DriftRow>(`SELECT * FROM ml.drift WHERE deployment = $1 AND "window" = '1 hour' ORDER BY kind, feature`, [deployment]);

  it('flags the shifted input only, with the PSI computed by hand; an unshifted deployment is not flagged', async () => {
    expect(await db.sql(`SELECT ml.set_baseline('iris', 'SELECT sl, sw, pl, pw FROM training') AS n`)).toEqual([{ n: '5000' }]);
    for (const name of ['steady', 'shifted']) {
      await db.sql(`CREATE TABLE ${name} (id int PRIMARY KEY, sl real, sw real, pl real, pw real)`);
      await db.sql(`SELECT ml.deploy($1::text, $1::regclass, 'iris', $2, $3)`, [name, IRIS_INPUTS, IRIS_OUTPUTS]);
    }
    // The same distribution (other rows of it), and one where petal length moved up by 1.5 cm.
    // A deployment with {"drift": false} is not counted.
    await db.sql(`CREATE TABLE quiet (id int PRIMARY KEY, sl real, sw real, pl real, pw real)`);
    await db.sql(`SELECT ml.deploy('quiet', 'quiet', 'iris', $1, $2, '{"drift": false}')`, [IRIS_INPUTS, IRIS_OUTPUTS]);
    await db.sql(`INSERT INTO quiet SELECT g, ${FLOWER('g', '3')} FROM generate_series(1, 1000) g`);
    await waitFor(async () => (await pending(db, 'quiet')) === 0, 'quiet rows scored');
    // The steady rows first: the outputs' baseline is iris@1's first 1,000 predictions.
    await db.sql(`INSERT INTO steady SELECT g, ${FLOWER('g + 5000')} FROM generate_series(1, 4000) g`);
    await waitFor(async () => (await pending(db, 'steady')) === 0, 'steady rows scored');
    await db.sql(`INSERT INTO shifted SELECT g, ${FLOWER('g + 5000', '1.5')} FROM generate_series(1, 4000) g`);
    const inputs = async (name: string) => (await drift(name)).filter((r) => r.kind === 'input');
    await waitFor(async () => {
      const [a, b] = await Promise.all([inputs('steady'), inputs('shifted')]);
      return a.length === 4 && b.length === 4 && [...a, ...b].every((r) => r.rows === '4000');
    }, 'drift counted for both deployments');

    const steady = await inputs('steady');
    expect(steady.map((r) => [r.feature, r.drifted])).toEqual([['X[0]', false], ['X[1]', false], ['X[2]', false], ['X[3]', false]]);
    const shifted = await inputs('shifted');
    expect(shifted.map((r) => [r.feature, r.drifted])).toEqual([['X[0]', false], ['X[1]', false], ['X[2]', true], ['X[3]', false]]);
    for (const r of [...steady, ...shifted]) expect(r.null_share).toBe(0);

    // The PSI of the shifted input, by hand from the stored baseline and the table's values.
    const [baseline] = await db.sql<{ summary: { edges: number[]; freqs: number[]; max: number } }>(
      `SELECT inputs->'X[2]' AS summary FROM ml._baselines WHERE model = 'iris' AND version = 1`);
    const values = (await db.sql<{ pl: number }>(`SELECT pl FROM shifted`)).map((r) => r.pl);
    const expected = psiByHand(baseline!.summary.edges, baseline!.summary.freqs, values);
    const got = shifted.find((r) => r.feature === 'X[2]')!;
    expect(got.psi).toBeCloseTo(expected, 6);
    expect(expected).toBeGreaterThan(0.2);
    expect(got.out_of_range_share).toBeCloseTo(values.filter((v) => v > baseline!.summary.max).length / values.length, 6);
    // The worker's /metrics shows the same PSI.
    const metrics = await serveWorkerMetrics(db, worker);
    try {
      expect(await metrics.value('pgscore_drift_psi', { deployment: 'shifted', model: 'iris@1', kind: 'input', feature: 'X[2]' })).toBeCloseTo(got.psi, 9);
    } finally {
      await metrics.close();
    }
    // An alert NOTIFY arrives when the drift starts, for the shifted deployment only.
    const raised = await waitFor(async () => alerts.find((a) => a.alert === 'drifted'), 'the drift alert');
    expect(raised).toMatchObject({ deployment: 'shifted', alert: 'drifted', state: 'raised', at: expect.any(String) });
    // The shifted input, and the outputs it moved (more virginica), but no other input.
    const features = (raised.detail as { features: string[] }).features;
    expect(features).toContain('X[2]');
    expect(features.filter((f) => f.startsWith('X['))).toEqual(['X[2]']);
    expect(await db.sql(`SELECT deployment, alert FROM ml.alerts`)).toEqual([{ deployment: 'shifted', alert: 'drifted' }]);
    // Dead letters and an invalid deployment raise alerts too.
    await db.sql(`INSERT INTO steady VALUES (-1, 'NaN', 3, 4, 1)`);
    await waitFor(async () => alerts.find((a) => a.deployment === 'steady' && a.alert === 'dead_letters'), 'the dead letter alert');
    await db.sql(`ALTER TABLE steady DROP COLUMN sw`);
    const invalid = await waitFor(async () => alerts.find((a) => a.deployment === 'steady' && a.alert === 'invalid'), 'the invalid alert');
    expect(invalid).toMatchObject({ state: 'raised', detail: { status: 'invalid' } });
    expect(alerts.filter((a) => a.deployment === 'steady' && a.alert === 'drifted')).toEqual([]);
    expect(await drift('quiet')).toEqual([]);
    // Outputs: their baseline came from the first 1,000 predictions of iris@1.
    const outputs = (await drift('steady')).filter((r) => r.kind === 'output').map((r) => r.feature);
    expect(outputs).toEqual(['label', 'probabilities[0]']);
  });

  it('takes a baseline from the first rows of a version without one', async () => {
    await db.sql(`SELECT ml.configure('baseline_rows', '500')`);
    await createSumsTable(db, 'firsts');
    await db.sql(`SELECT ml.deploy('firsts', 'firsts', 'sums', $1, $2)`, [SUMS_INPUTS, SUMS_OUTPUTS]);
    await insertSums(db, 'firsts', 1, 2000);
    await waitFor(async () => (await pending(db, 'firsts')) === 0, 'scored');
    const [baseline] = await waitFor(async () => {
      const rows = await db.sql<{ origin: string; rows: string; inputs: Record<string, { kind: string }>; outputs: Record<string, unknown> | null }>(
        `SELECT origin, rows, inputs, outputs FROM ml._baselines WHERE model = 'sums' AND version = 1`);
      return rows.length === 1 && rows;
    }, 'the baseline stored');
    expect(baseline!.origin).toBe('first_rows');
    expect(baseline!.rows).toBe('500');
    expect(Object.entries(baseline!.inputs).map(([f, s]) => [f, s.kind]).sort()).toEqual([
      ['f32[0]', 'numeric'], ['f32[1]', 'numeric'], ['f64[0]', 'numeric'], ['flag[0]', 'categorical'], ['i32[0]', 'numeric'], ['i64[0]', 'numeric'], ['tag[0]', 'categorical'],
    ]);
    expect(Object.keys(baseline!.outputs ?? {})).toEqual(['total']);
    // Counting starts once the stored baseline is read back: the 2,000 rows above may all have
    // been scored before (CI saw it), so later rows come after it.
    await insertSums(db, 'firsts', 2001, 2100);
    await waitFor(async () => (await drift('firsts')).length > 0, 'drift of the later rows');
  });

  it('refuses a baseline query that does not give the model\'s features', async () => {
    await expect(db.sql(`SELECT ml.set_baseline('iris', 'SELECT sl, sw FROM training')`)).rejects.toThrow(
      'the baseline query gives 2 column(s), but iris@1 takes 4 feature(s): X[0], X[1], X[2], X[3]');
    await expect(db.sql(`SELECT ml.set_baseline('iris', 'SELECT sl, sw, pl, pw FROM training WHERE false')`)).rejects.toThrow(
      'the baseline query gives no rows');
    await expect(db.sql(`SELECT ml.set_baseline('nope', 'SELECT 1')`)).rejects.toThrow('model "nope" is not registered');
  });

  it('pgscore model push --baseline summarises a CSV file as ml.set_baseline summarises a query', async () => {
    await db.sql(`SELECT ml.set_baseline('iris', 'SELECT sl, sw, pl, pw FROM training')`);
    const rows = await db.sql<{ sl: number; sw: number; pl: number; pw: number }>(`SELECT sl, sw, pl, pw FROM training`);
    const dir = await mkdtemp(join(tmpdir(), 'pgscore-baseline-'));
    const csv = join(dir, 'train.csv');
    await writeFile(csv, ['sepal_length,sepal_width,petal_length,petal_width', ...rows.map((r) => [r.sl, r.sw, r.pl, r.pw].join(','))].join('\n'));
    const pushed = await pgscore(['model', 'push', 'iris_file', new URL('../../examples/models/iris.onnx', import.meta.url).pathname, '--baseline', csv],
      { DATABASE_URL: db.url });
    expect(pushed).toMatchObject({ code: 0, stdout: 'registered iris_file@1 (production)\n' });
    const [fromFile, fromQuery] = await db.sql<{ origin: string; rows: string; inputs: Record<string, { edges: number[]; freqs: number[] }> }>(
      `SELECT origin, rows, inputs FROM ml._baselines WHERE (model, version) IN (('iris_file', 1), ('iris', 1)) ORDER BY model DESC`);
    expect(fromFile).toMatchObject({ origin: 'file', rows: '5000' });
    expect(fromQuery).toMatchObject({ origin: 'query', rows: '5000' });
    for (const feature of ['X[0]', 'X[1]', 'X[2]', 'X[3]']) {
      fromFile!.inputs[feature]!.edges.forEach((edge, i) => expect(edge).toBeCloseTo(fromQuery!.inputs[feature]!.edges[i]!, 5));
      expect(fromFile!.inputs[feature]!.freqs).toEqual(fromQuery!.inputs[feature]!.freqs);
    }

    await writeFile(csv, 'a,b,c\n1,2,3\n');
    const refused = await pgscore(['model', 'push', 'iris_bad', new URL('../../examples/models/iris.onnx', import.meta.url).pathname, '--baseline', csv],
      { DATABASE_URL: db.url });
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain(`--baseline ${csv} has 3 column(s), but the model takes 4 feature(s): X[0], X[1], X[2], X[3]`);
    expect(await db.sql(`SELECT count(*)::int AS n FROM ml._models WHERE name = 'iris_bad'`)).toEqual([{ n: 0 }]);
  });
});
