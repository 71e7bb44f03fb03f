import { readFile } from 'node:fs/promises';
import pg from 'pg';
import { migrate } from '../../src/db/migrate.js';
import { pushModel } from '../../src/models/registry.js';
import type { ModelKey } from './result.js';
import type { BenchServer } from './server.js';

export { startServer, type BenchServer } from './server.js';

export const MODEL_FILES: Record<ModelKey, string> = {
  logreg: 'breast_cancer_logreg.onnx',
  gbm: 'breast_cancer_gbm.onnx',
};
export const MODEL_TITLES: Record<ModelKey, string> = {
  logreg: 'logistic (breast_cancer_logreg)',
  gbm: '100-tree GBM (breast_cancer_gbm)',
};
export const MODELS: readonly ModelKey[] = ['logreg', 'gbm'];

export function modelPath(model: ModelKey): string {
  return new URL(`../../examples/models/${MODEL_FILES[model]}`, import.meta.url).pathname;
}

export function modelBytes(model: ModelKey): Promise<Buffer> {
  return readFile(modelPath(model));
}

export const FEATURES = Array.from({ length: 30 }, (_, i) => `f${i}`);

export function withDatabase(url: string, database: string): string {
  const parsed = new URL(url);
  parsed.pathname = `/${database}`;
  return parsed.toString();
}

export interface BenchDatabase {
  readonly url: string;
  readonly pool: pg.Pool;
  query<T extends pg.QueryResultRow = Record<string, unknown>>(text: string, values?: unknown[]): Promise<T[]>;
  close(): Promise<void>;
}

/**
 * A fresh database (dropped first if a previous run left it), with the ml schema and both models
 * registered as `logreg` and `gbm` (the way `pgscore model push` does it).
 */
export async function freshDatabase(server: BenchServer, name: string): Promise<BenchDatabase> {
  const dbName = `pgscore_bench_${name}`;
  const admin = new pg.Client({ connectionString: server.adminUrl });
  await admin.connect();
  // A database with a replication slot (a deployment that captured from the WAL) cannot be dropped.
  await admin.query(`SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE database = $1 AND active_pid IS NOT NULL`, [dbName]);
  await admin.query(`SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1`, [dbName]).catch(() => undefined);
  await admin.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
  await admin.query(`CREATE DATABASE ${dbName}`);
  await admin.end();
  const url = withDatabase(server.adminUrl, dbName);
  const pool = new pg.Pool({ connectionString: url, max: 20, application_name: 'pgscore bench' });
  pool.on('error', () => undefined);
  const client = await pool.connect();
  try {
    await migrate(client);
  } finally {
    client.release();
  }
  for (const model of MODELS) await pushModel(pool, model, await modelBytes(model));
  return {
    url,
    pool,
    async query<T extends pg.QueryResultRow>(text: string, values?: unknown[]) {
      return (await pool.query<T>(text, values)).rows;
    },
    async close() {
      await pool.end();
      const dropper = new pg.Client({ connectionString: server.adminUrl });
      await dropper.connect();
      await dropper.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`).catch(() => undefined);
      await dropper.end();
    },
  };
}

/**
 * The bench table: a bigserial key, 30 real features and the two prediction columns (label, p1),
 * optionally with a partial index on unscored rows (what an application loop would add).
 */
export async function createFeatureTable(db: BenchDatabase, table: string, options: { unscoredIndex?: boolean } = {}): Promise<void> {
  await db.query(`DROP TABLE IF EXISTS ${table} CASCADE`);
  await db.query(
    `CREATE TABLE ${table} (id bigserial PRIMARY KEY, ${FEATURES.map((f) => `${f} real NOT NULL`).join(', ')}, label bigint, p1 real)`,
  );
  if (options.unscoredIndex) await db.query(`CREATE INDEX ON ${table} (id) WHERE p1 IS NULL`);
}

/**
 * ml.deploy of a model on a table: X = the 30 features; label and probabilities[1] written back.
 * `options` go to ml.deploy as they are, except that the bench never backfills (it queues itself).
 */
export async function deploy(db: BenchDatabase, table: string, model: ModelKey, deployment = table, options: Record<string, unknown> = {}): Promise<void> {
  const rows = await db.query<{ status: string }>(
    `SELECT ml.deploy($1, $2::regclass, $3, inputs => $4::jsonb, outputs => $5::jsonb, options => $6::jsonb) AS status`,
    [deployment, table, model, JSON.stringify({ X: FEATURES }), JSON.stringify({ label: 'label', p1: 'probabilities[1]' }), JSON.stringify({ ...options, backfill: false })],
  );
  if (rows[0]?.status !== 'active') throw new Error(`deployment ${deployment} is ${rows[0]?.status}, not active`);
}

/** SQL that inserts n rows of random features (one statement). */
export function insertSelectSql(table: string, n: number): string {
  return `INSERT INTO ${table} (${FEATURES.join(', ')})
          SELECT ${FEATURES.map((_, i) => `(random() * ${i + 1})::real`).join(', ')} FROM generate_series(1, ${n})`;
}

export const SINGLE_INSERT_VALUES = FEATURES.map((_, i) => `(random() * ${i + 1})::real`).join(', ');

export async function queueSize(db: BenchDatabase, deployment: string): Promise<number> {
  const rows = await db.query<{ pending: string | null }>('SELECT pending FROM ml.status WHERE deployment = $1', [deployment]);
  return Number(rows[0]?.pending ?? 0);
}

export async function deploymentId(db: BenchDatabase, deployment: string): Promise<number> {
  const rows = await db.query<{ id: number }>('SELECT id FROM ml._deployments WHERE name = $1', [deployment]);
  if (!rows[0]) throw new Error(`no deployment ${deployment}`);
  return rows[0].id;
}
