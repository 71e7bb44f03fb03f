/**
 * The status page (GET / beside /metrics) in a real headless Chromium, Debian's, driven by
 * Playwright: loaded from a running worker, its figures checked against SQL, its text escaped,
 * readable at a phone's width; screenshots in test-output/.
 */
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser, type Locator, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startMetrics } from '../../src/metrics/metrics.js';
import type { MetricsServer } from '../../src/metrics/server.js';
import { pushModel } from '../../src/models/registry.js';
import type { Worker } from '../../src/worker/worker.js';
import { createTestDatabase, modelBytes, pending, push, quietLog, startWorker, waitFor, type TestDatabase } from '../helpers/db.js';
import { freePort } from '../helpers/ports.js';

const CHROMIUM = process.env.PGSCORE_CHROMIUM ?? '/usr/bin/chromium';
const OUTPUT = fileURLToPath(new URL('../../test-output/', import.meta.url));
const HAVE_CHROMIUM = existsSync(CHROMIUM);
const IN_CI = Boolean(process.env.CI) && process.env.CI !== 'false';
if (!HAVE_CHROMIUM && !IN_CI) {
  console.warn(`status page test skipped: no Chromium at ${CHROMIUM} (apt-get install chromium; CI installs it and fails without it)`);
}

const IRIS_INPUTS = '{"X": ["sl", "sw", "pl", "pw"]}';
const IRIS_OUTPUTS = '{"species": "label", "p_setosa": "probabilities[0]"}';
/** Deterministic, well-mixed values over the iris measurements' ranges (g is the row number). */
const U = (g: string, salt: string) => `((hashtext((${g})::text || '${salt}')::bigint & 65535) / 65536.0)`;
const FLOWER = (g: string, shift = '0') =>
  `4.3 + 3.6 * ${U(g, 'a')}, 2.0 + 2.4 * ${U(g, 'b')}, 1.0 + 5.9 * ${U(g, 'c')} + ${shift}, 0.1 + 2.4 * ${U(g, 'd')}`;
/** A column and a table whose names are markup: what escaping is for. */
const MARKUP_COLUMN = '<b>pw</b>';
const MARKUP_TABLE = '<i>t</i>';


/** The number a cell shows: "4,000" → 4000, "–" → null. */
const numberIn = (text: string | null) => (text === null || text.trim() === '–' ? null : Number(text.replace(/[^0-9.-]/g, '')));

describe.skipIf(!HAVE_CHROMIUM && !IN_CI)('the status page', () => {
  let db: TestDatabase;
  let worker: Worker;
  let server: MetricsServer;
  let browser: Browser;
  const consoleErrors: string[] = [];

  beforeAll(async () => {
    if (!HAVE_CHROMIUM) throw new Error(`Chromium is missing at ${CHROMIUM}: .ci/run installs Debian's chromium package`);
    db = await createTestDatabase();
    await pushModel(db.pool, 'iris', await modelBytes('iris.onnx'), { metadata: { accuracy: 0.97 } });
    await push(db, 'iris', 'iris_v2.onnx');
    await db.sql(`CREATE TABLE training (sl real, sw real, pl real, pw real)`);
    await db.sql(`INSERT INTO training SELECT ${FLOWER('g')} FROM generate_series(1, 3000) g`);
    await db.sql(`SELECT ml.set_baseline('iris', 'SELECT sl, sw, pl, pw FROM training')`);

    // "shifted": petal length moved up by 1.5 cm (drift), labels filled in later (quality), two
    // rows the model cannot take (dead letters). "split": 90 % iris@1, 10 % iris@2.
    await db.sql(`CREATE TABLE shifted (id int PRIMARY KEY, sl real, sw real, pl real, pw real, species text, p_setosa real, truth text)`);
    await db.sql(`SELECT ml.deploy('shifted', 'shifted', 'iris', $1, $2, '{"label": "truth"}')`, [IRIS_INPUTS, IRIS_OUTPUTS]);
    await db.sql(`CREATE TABLE split (id int PRIMARY KEY, sl real, sw real, pl real, pw real, species text, p_setosa real)`);
    await db.sql(`SELECT ml.deploy('split', 'split', 'iris', $1, $2)`, [IRIS_INPUTS, IRIS_OUTPUTS]);
    await db.sql(`SELECT ml.split('split', '{"iris@1": 90, "iris@2": 10}')`);
    // "broken": rows queued, then in the same transaction an input column dropped: the
    // deployment turns invalid with a reason naming the column and table, its rows stay queued.
    await db.sql(`CREATE TABLE "${MARKUP_TABLE}" (id int PRIMARY KEY, sl real, sw real, pl real, "${MARKUP_COLUMN}" real, species text)`);
    await db.sql(`SELECT ml.deploy('broken', $1::regclass, 'iris', $2, '{"species": "label"}')`, [
      `"${MARKUP_TABLE}"`,
      JSON.stringify({ X: ['sl', 'sw', 'pl', MARKUP_COLUMN] }),
    ]);

    worker = await startWorker(db);
    const port = await freePort();
    server = (await startMetrics('worker', worker, db.workerUrl, { metricsHost: '127.0.0.1', metricsPort: port }, quietLog))!;

    const client = await db.pool.connect();
    try {
      await client.query('BEGIN');
      await client.query(`INSERT INTO "${MARKUP_TABLE}" (id, sl, sw, pl, "${MARKUP_COLUMN}") SELECT g, ${FLOWER('g')} FROM generate_series(1, 25) g`);
      await client.query(`ALTER TABLE "${MARKUP_TABLE}" DROP COLUMN "${MARKUP_COLUMN}"`);
      await client.query('COMMIT');
    } finally {
      client.release();
    }
    for (let first = 1; first <= 3000; first += 1000) {
      await db.sql(`INSERT INTO shifted (id, sl, sw, pl, pw) SELECT g, ${FLOWER('g + 5000', '1.5')} FROM generate_series($1::int, $1::int + 999) g`, [first]);
      await db.sql(`INSERT INTO split (id, sl, sw, pl, pw) SELECT g, ${FLOWER('g + 9000')} FROM generate_series($1::int, $1::int + 599) g`, [first]);
    }
    await db.sql(`INSERT INTO shifted (id, sl, sw, pl, pw) VALUES (-1, 'NaN', 3, 4, 1), (-2, 5, 'NaN', 4, 1)`);
    await waitFor(async () => (await pending(db, 'shifted')) === 0 && (await pending(db, 'split')) === 0, 'rows scored');
    // The truth comes later: right for 4 rows in 5.
    await db.sql(`UPDATE shifted SET truth = CASE WHEN id % 5 = 0 THEN 'unknown' ELSE species END WHERE species IS NOT NULL`);
    await waitFor(async () => {
      const rows = await db.sql<{ labelled: string }>(`SELECT labelled FROM ml.performance WHERE deployment = 'shifted' AND "window" = '1 day'`);
      return rows[0]?.labelled === '3000';
    }, 'labels measured');
    await waitFor(async () => {
      const rows = await db.sql<{ n: string }>(`SELECT count(*) AS n FROM ml.drift WHERE deployment = 'shifted' AND kind = 'input' AND "window" = '1 hour' AND rows >= 3000`);
      return rows[0]?.n === '4';
    }, 'drift counted');

    // Playwright gives each launch a new, empty profile (user data dir) and removes it on close.
    // Chromium reaches for Google's servers unless told not to; this machine's network refuses them.
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
        '--disable-component-update', '--disable-sync'],
    });
    await mkdir(OUTPUT, { recursive: true });
  });

  afterAll(async () => {
    await browser?.close();
    await server?.close();
    await worker?.stop();
    await db?.drop();
  });

  /** A page on the worker's status page, with console errors (CSP violations among them) collected. */
  async function open(viewport: { width: number; height: number }, mobile = false): Promise<Page> {
    const context = await browser.newContext({ viewport, isMobile: mobile, hasTouch: mobile, deviceScaleFactor: mobile ? 2 : 1, locale: 'en-US' });
    const page = await context.newPage();
    page.on('console', (message) => message.type() === 'error' && consoleErrors.push(message.text()));
    page.on('pageerror', (error) => consoleErrors.push(error.message));
    const response = await page.goto(server.statusUrl);
    expect(response?.status()).toBe(200);
    await page.locator('body[data-refreshes]').waitFor();
    return page;
  }

  const card = (page: Page, deployment: string): Locator => page.locator(`section.card[data-deployment="${deployment}"]`);
  const field = (scope: Locator, name: string) => scope.locator(`[data-field="${name}"]`).first().textContent();

  /** What the page shows that SQL can tell, beside what SQL says: equal once the page has refreshed. */
  async function shownAndTrue(page: Page) {
    const status = await db.sql<{ deployment: string; state: string; model: string; pending: string; dead_letters: string; versions_in_use: string[] }>(
      `SELECT deployment, state, model, pending, dead_letters, versions_in_use FROM ml.status ORDER BY deployment`);
    const drift = await db.sql<{ deployment: string; model: string; kind: string; feature: string; psi: number }>(
      `SELECT deployment, model, kind, feature, psi FROM ml.drift WHERE "window" = '1 hour' ORDER BY deployment, model, kind DESC, feature`);
    const scored = await db.sql<{ deployment: string; n: string }>(
      `SELECT d.name AS deployment, coalesce(sum(b.scored), 0) AS n FROM ml._deployments d LEFT JOIN ml._batches b ON b.deployment_id = d.id GROUP BY 1 ORDER BY 1`);
    const truth = {
      deployments: status.map((s) => s.deployment),
      cards: await Promise.all(status.map(async (s) => ({
        deployment: s.deployment,
        state: s.state,
        model: s.model,
        pending: Number(s.pending ?? 0),
        deadLetters: Number(s.dead_letters),
        versions: s.versions_in_use.join(', ') || '–',
        scoredLastHour: Number(scored.find((r) => r.deployment === s.deployment)!.n),
        drift: drift.filter((r) => r.deployment === s.deployment).map((r) => `${r.model} ${r.kind} ${r.feature} ${r.psi.toFixed(3)}`),
      }))),
    };
    const shown = {
      deployments: await page.locator('section.card').evaluateAll((cards) => cards.map((c) => c.getAttribute('data-deployment'))),
      cards: await Promise.all(status.map(async (s) => {
        const c = card(page, s.deployment);
        const model = (await field(c, 'model'))!;
        return {
          deployment: s.deployment,
          state: await field(c, 'state'),
          model: model.split(' → ').pop(),
          pending: numberIn(await field(c, 'pending')),
          deadLetters: numberIn(await field(c, 'dead-letters')),
          versions: await field(c, 'versions'),
          scoredLastHour: numberIn(await field(c, 'scored-hour')),
          drift: await c.locator('table.drift tbody tr').evaluateAll((rows) =>
            rows.map((r) => `${r.getAttribute('data-model')} ${r.getAttribute('data-kind')} ${r.getAttribute('data-feature')} ${r.querySelector('[data-field="psi"]')?.textContent}`)),
        };
      })),
    };
    return { shown, truth };
  }

  it('shows each deployment as SQL has it: state, versions, split, pending, dead letters, throughput, drift, quality', async () => {
    const page = await open({ width: 1280, height: 900 });
    // The worker goes on counting drift for a few seconds after the rows are scored: compare
    // after each of the page's refreshes until both agree, then assert on the last comparison.
    let last = await shownAndTrue(page);
    await waitFor(async () => {
      await page.waitForFunction((n) => Number(document.body.dataset.refreshes) > n, Number(await page.locator('body').getAttribute('data-refreshes')));
      last = await shownAndTrue(page);
      return JSON.stringify(last.shown) === JSON.stringify(last.truth);
    }, 'the page to show what SQL says', 30_000).catch(() => undefined);
    expect(last.shown).toEqual(last.truth);
    expect(last.truth.deployments).toEqual(['broken', 'shifted', 'split']);
    expect(last.truth.cards.map((c) => [c.deployment, c.pending, c.deadLetters])).toEqual([['broken', 25, 0], ['shifted', 0, 2], ['split', 0, 0]]);
    expect(last.truth.cards.find((c) => c.deployment === 'shifted')!.drift.length).toBeGreaterThanOrEqual(4);

    // The split's weights as ml.deployments has them, and both versions scored some rows.
    const [options] = await db.sql<{ variants: Record<string, number> }>(`SELECT options->'variants' AS variants FROM ml.deployments WHERE deployment = 'split'`);
    expect(options!.variants).toEqual({ 'iris@1': 90, 'iris@2': 10 });
    expect(await field(card(page, 'split'), 'split')).toBe('iris@1 90 % · iris@2 10 %');
    expect(await field(card(page, 'split'), 'versions')).toBe('iris@1, iris@2');
    expect(await card(page, 'shifted').locator('[data-row="split"]').isHidden()).toBe(true);

    // The shifted input is flagged drifted, the others not.
    const rows = card(page, 'shifted').locator('table.drift tbody tr[data-kind="input"]');
    expect(await rows.evaluateAll((trs) => trs.map((tr) => [tr.getAttribute('data-feature'), tr.classList.contains('drifted')]))).toEqual([
      ['X[0]', false], ['X[1]', false], ['X[2]', true], ['X[3]', false],
    ]);
    // Each histogram is a Chart.js bar chart of the baseline's shares beside the live ones.
    const [baseline] = await db.sql<{ freqs: number[] }>(`SELECT inputs->'X[2]'->'freqs' AS freqs FROM ml._baselines WHERE model = 'iris' AND version = 1`);
    const histogram = (await card(page, 'shifted').locator('tr[data-kind="input"][data-feature="X[2]"] canvas').evaluate(
      (canvas) => (globalThis as unknown as { Chart: { getChart(c: unknown): { data: { labels: string[]; datasets: { data: number[] }[] } } } })
        .Chart.getChart(canvas)!.data)) ;
    expect(histogram.labels).toHaveLength(10);
    expect(histogram.datasets[0]!.data).toEqual(baseline!.freqs);
    expect(histogram.datasets[1]!.data.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 9);
    // The throughput chart adds up to the rows scored in the last hour.
    const throughput = await card(page, 'shifted').locator('.charts canvas').first().evaluate(
      (canvas) => (globalThis as unknown as { Chart: { getChart(c: unknown): { data: { datasets: { data: number[] }[] } } } })
        .Chart.getChart(canvas)!.data.datasets[0]!.data.reduce((a, b) => a + b, 0));
    expect(throughput).toBe(last.truth.cards.find((c) => c.deployment === 'shifted')!.scoredLastHour);

    // Live quality over the last day, beside the validation figure from the model's metadata.
    const [quality] = await db.sql<{ accuracy: number }>(`SELECT accuracy FROM ml.performance WHERE deployment = 'shifted' AND "window" = '1 day'`);
    expect(await field(card(page, 'shifted').locator('table.quality tr[data-model="iris@1"]'), 'accuracy')).toBe(
      `${quality!.accuracy.toFixed(3)} (validation 0.970)`);

    // Markup in a table's and a column's names is shown as text.
    const broken = card(page, 'broken');
    const [reason] = await db.sql<{ reason: string }>(`SELECT reason FROM ml.deployments WHERE deployment = 'broken'`);
    expect(reason!.reason).toContain(`"${MARKUP_COLUMN}"`);
    expect(await field(broken, 'reason')).toBe(reason!.reason);
    expect(await field(broken, 'source')).toBe(`public."${MARKUP_TABLE}"`);
    expect(await broken.locator('b, i').count()).toBe(0);
    expect(await field(broken, 'state')).toBe('invalid');

    await page.screenshot({ path: path.join(OUTPUT, 'status-page.png'), fullPage: true });
    expect(consoleErrors).toEqual([]);
    await page.context().close();
  });

  it('fits a phone: cards stack, nothing wider than the screen', async () => {
    const page = await open({ width: 390, height: 844 }, true);
    const widths = await page.evaluate(() => ({ scroll: document.documentElement.scrollWidth, client: document.documentElement.clientWidth }));
    expect(widths.scroll).toBeLessThanOrEqual(widths.client);
    const boxes = await page.locator('section.card').evaluateAll((cards) => cards.map((c) => c.getBoundingClientRect().toJSON() as { x: number; width: number }));
    for (const box of boxes) {
      expect(box.x).toBeGreaterThanOrEqual(0);
      expect(box.x + box.width).toBeLessThanOrEqual(390);
    }
    // One column: each card below the one before.
    expect(new Set(boxes.map((b) => Math.round(b.x))).size).toBe(1);
    await page.screenshot({ path: path.join(OUTPUT, 'status-page-phone.png'), fullPage: true });
    expect(consoleErrors).toEqual([]);
    await page.context().close();
  });

  it('serves the data as JSON, the assets, and /metrics as before', async () => {
    const origin = server.statusUrl.replace(/\/$/, '');
    const json = await fetch(`${origin}/status.json`);
    expect(json.headers.get('content-type')).toBe('application/json; charset=utf-8');
    const body = (await json.json()) as { deployments: { deployment: string }[]; quality: { rows: unknown[] } };
    expect(body.deployments.map((d) => d.deployment)).toEqual(['broken', 'shifted', 'split']);
    expect(body.quality.rows).toHaveLength(1);
    const chart = await fetch(`${origin}/assets/chart.umd.min.js`);
    expect([chart.status, chart.headers.get('content-type')]).toEqual([200, 'text/javascript; charset=utf-8']);
    expect(await chart.text()).toContain('Chart.js v4');
    const html = await fetch(`${origin}/`);
    expect(html.headers.get('content-security-policy')).toContain("script-src 'self'");
    const again = await fetch(`${origin}/`, { headers: { 'if-none-match': html.headers.get('etag')! } });
    expect(again.status).toBe(304);
    expect((await fetch(`${origin}/metrics`)).status).toBe(200);
    const missing = await fetch(`${origin}/nothing`);
    expect([missing.status, await missing.text()]).toEqual([404, 'pgscore serves /metrics, and its status page at /\n']);
    expect((await fetch(`${origin}/status.json`, { method: 'POST' })).status).toBe(405);
  });

  it('ml._status_page() may be run by workers and admins, not by PUBLIC', async () => {
    const [acl] = await db.sql<{ worker: boolean; admin: boolean; public: boolean }>(`
      SELECT has_function_privilege('pgscore_worker', 'ml._status_page()', 'EXECUTE') AS worker,
             has_function_privilege('pgscore_admin', 'ml._status_page()', 'EXECUTE') AS admin,
             p.proacl IS NULL OR EXISTS (SELECT 1 FROM aclexplode(p.proacl) a WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE') AS public
        FROM pg_proc p WHERE p.oid = 'ml._status_page()'::regprocedure`);
    expect(acl).toEqual({ worker: true, admin: true, public: false });
  });
});
