import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fileURLToPath } from 'node:url';
import { exited, pgscore, startPgscore } from '../helpers/cli.js';
import { createTestDatabase, MODELS, waitFor, type TestDatabase } from '../helpers/db.js';
import pg from 'pg';
import { inject } from 'vitest';
import { withDatabase } from '../helpers/global-postgres.js';

const IRIS = fileURLToPath(new URL('iris.onnx', MODELS));

describe('the pgscore command', () => {
  let db: TestDatabase;
  let emptyUrl: string;
  const emptyName = `pgscore_cli_${Date.now()}`;

  beforeAll(async () => {
    db = await createTestDatabase();
    const admin = new pg.Client({ connectionString: inject('adminUrl') });
    await admin.connect();
    await admin.query(`CREATE DATABASE ${emptyName}`);
    await admin.end();
    emptyUrl = withDatabase(inject('adminUrl'), emptyName);
  });
  afterAll(async () => {
    await db?.drop();
    const admin = new pg.Client({ connectionString: inject('adminUrl') });
    await admin.connect();
    await admin.query(`DROP DATABASE IF EXISTS ${emptyName} WITH (FORCE)`);
    await admin.end();
  });

  it('migrate installs the schema on an empty database, concurrently, and again idempotently', async () => {
    const runs = await Promise.all([1, 2, 3].map(() => pgscore(['migrate'], { DATABASE_URL: emptyUrl })));
    for (const run of runs) expect(run, run.stderr).toMatchObject({ code: 0 });
    const applied = runs.filter((run) => run.stdout.includes('applied 0001_schema.sql, 0002_kafka.sql'));
    expect(applied).toHaveLength(1);
    const again = await pgscore(['migrate'], { DATABASE_URL: emptyUrl });
    expect(again.code).toBe(0);
    expect(again.stdout).toBe('ml schema at version 12: schema already current; functions refreshed\n');
  });

  it('model push registers a model with its signature and prints its version', async () => {
    const first = await pgscore(['model', 'push', 'iris', IRIS, '--metadata', '{"team": "bio"}'], { DATABASE_URL: db.url });
    expect(first).toMatchObject({ code: 0, stdout: 'registered iris@1 (production)\n' });
    const second = await pgscore(['model', 'push', 'iris', IRIS], { DATABASE_URL: db.url });
    expect(second.stdout).toBe('registered iris@2 (not promoted; SELECT ml.promote(...) to use it)\n');
    const [model] = await db.sql<{ metadata: unknown; status: string }>(`SELECT metadata, status FROM ml.models WHERE version = 1`);
    expect(model).toEqual({ metadata: { team: 'bio' }, status: 'ready' });
    const list = await pgscore(['model', 'list'], { DATABASE_URL: db.url });
    expect(list.stdout).toBe('iris@1 [production] ready\niris@2 ready\n');
  });

  it('model push refuses a file that is not a model, and bad arguments', async () => {
    const notModel = await pgscore(['model', 'push', 'junk', fileURLToPath(import.meta.url)], { DATABASE_URL: db.url });
    expect(notModel.code).toBe(1);
    expect(notModel.stderr).toMatch(/^pgscore: onnxruntime cannot load model junk: /);
    const missing = await pgscore(['model', 'push', 'junk', '/nope.onnx'], { DATABASE_URL: db.url });
    expect(missing).toMatchObject({ code: 2, stderr: 'pgscore: cannot read /nope.onnx: no such file\n' });
    const metadata = await pgscore(['model', 'push', 'junk', IRIS, '--metadata', '[1]'], { DATABASE_URL: db.url });
    expect(metadata).toMatchObject({ code: 2, stderr: 'pgscore: --metadata must be a JSON object, e.g. {"trained_on": "2026-11-01"}\n' });
    const badName = await pgscore(['model', 'push', 'a@b', IRIS], { DATABASE_URL: db.url });
    expect(badName.code).toBe(1);
    expect(badName.stderr).toContain("model name 'a@b' is not valid");
    expect(await db.sql(`SELECT 1 FROM ml.models WHERE name <> 'iris'`)).toEqual([]);
  });

  it('example installs the iris model, table and deployment, idempotently', async () => {
    for (let i = 0; i < 2; i++) {
      const run = await pgscore(['example'], { DATABASE_URL: emptyUrl });
      expect(run, run.stderr).toMatchObject({ code: 0 });
      expect(run.stdout).toMatch(/^example ready: INSERT INTO iris/);
    }
    const client = new pg.Client({ connectionString: emptyUrl });
    await client.connect();
    try {
      const { rows } = await client.query(`SELECT deployment, status FROM ml.deployments`);
      expect(rows).toEqual([{ deployment: 'iris_species', status: 'active' }]);
    } finally {
      await client.end();
    }
  });

  it('reports every configuration problem at once, with exit code 2', async () => {
    const run = await pgscore(['worker', '--batch-size', '0'], {
      DATABASE_URL: 'mysql://x',
      PGSCORE_CONCURRENCY: 'many',
    });
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('invalid configuration:');
    expect(run.stderr).toContain('DATABASE_URL="mysql://x": must be a postgres:// or postgresql:// connection string');
    expect(run.stderr).toContain('--batch-size="0": Too small');
    expect(run.stderr).toContain('PGSCORE_CONCURRENCY="many"');
    const noUrl = await pgscore(['status'], { DATABASE_URL: '' });
    expect(noUrl.code).toBe(2);
    expect(noUrl.stderr).toMatch(/^pgscore: DATABASE_URL is not set\nhint: /);
    const noBrokers = await pgscore(['relay'], { DATABASE_URL: db.url, KAFKA_BROKERS: '' });
    expect(noBrokers.code).toBe(2);
    expect(noBrokers.stderr).toMatch(/^pgscore: KAFKA_BROKERS is not set\nhint: /);
    const badBrokers = await pgscore(['worker', '--transport', 'kafka'], { DATABASE_URL: db.url, KAFKA_BROKERS: 'kafka' });
    expect(badBrokers.code).toBe(2);
    expect(badBrokers.stderr).toContain('KAFKA_BROKERS="kafka": must be host:port');
    const unknown = await pgscore(['frobnicate']);
    expect(unknown.code).toBe(2);
  });

  it('worker scores, status prints ml.status, and SIGTERM stops the worker cleanly', async () => {
    await db.sql(`CREATE TABLE flowers (id int PRIMARY KEY, sl real, sw real, pl real, pw real)`);
    await db.sql(`SELECT ml.deploy('flowers', 'flowers', 'iris', '{"X": ["sl", "sw", "pl", "pw"]}', '{"species": "label"}')`);
    const worker = startPgscore(['worker'], { DATABASE_URL: db.workerUrl, PGSCORE_LOG_LEVEL: 'info' });
    try {
      await db.sql(`INSERT INTO flowers VALUES (1, 5.1, 3.5, 1.4, 0.2)`);
      await waitFor(async () => (await db.sql<{ species: string }>('SELECT species FROM flowers'))[0]?.species === 'setosa', 'scored by the CLI worker');
      const status = await pgscore(['status'], { DATABASE_URL: db.url });
      expect(status.code).toBe(0);
      expect(status.stdout).toMatch(/│ flowers\s+│ iris@1\s+│ active\s+│ 0\s+│/);
      const json = await pgscore(['status', '--json'], { DATABASE_URL: db.url });
      expect(JSON.parse(json.stdout)).toMatchObject([{ deployment: 'flowers', pending: '0', scored_last_minute: '1' }]);
    } finally {
      worker.kill('SIGTERM');
    }
    expect(await exited(worker)).toBe(0);
    expect(worker.output()).toContain('stopping after the batches in flight');
  });
});
