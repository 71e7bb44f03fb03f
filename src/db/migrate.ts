import { readdir, readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import type pg from 'pg';
import { PgscoreError } from '../errors.js';

const SQL_DIR = new URL('../../sql/', import.meta.url);
/**
 * Advisory lock (1885827939 = 'pgsc', 2): one migrate at a time per database. Its only use: the
 * schema may not exist yet, so no table of pgscore's can serve. Any role can take an advisory
 * lock, so migrate never waits for it without a limit: it tries, and after MIGRATE_LOCK_WAIT_MS
 * names the session that holds it.
 */
const MIGRATE_TRY_LOCK = 'SELECT pg_try_advisory_lock(1885827939, 2) AS locked';
const MIGRATE_UNLOCK = 'SELECT pg_advisory_unlock(1885827939, 2)';
const MIGRATE_LOCK_HOLDER = `
  SELECT a.pid, a.usename AS role, a.application_name AS application, a.state
    FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
   WHERE l.locktype = 'advisory' AND l.granted AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
     AND l.classid = 1885827939::oid AND l.objid = 2::oid AND l.objsubid = 2`;
const MIGRATE_LOCK_WAIT_MS = 60_000;

interface SqlFile {
  readonly name: string;
  readonly sql: string;
}

async function readSqlFiles(sqlDir: URL, folder: string): Promise<SqlFile[]> {
  const dir = new URL(`${folder}/`, sqlDir);
  const names = (await readdir(dir)).filter((name) => name.endsWith('.sql')).sort();
  return Promise.all(names.map(async (name) => ({ name, sql: await readFile(new URL(name, dir), 'utf8') })));
}

function versionOf(name: string): number {
  const match = /^(\d+)_/.exec(name);
  if (!match?.[1]) throw new PgscoreError(`migration file ${name} does not start with a number`);
  return Number(match[1]);
}

export interface MigrateResult {
  /** Migration files applied by this call (empty when the schema was current). */
  readonly applied: readonly string[];
  readonly schemaVersion: number;
  /** Every deployment after its generated objects were rebuilt, with its state. */
  readonly deployments: readonly RebuiltDeployment[];
}

export interface RebuiltDeployment {
  readonly deployment: string;
  readonly status: string;
  readonly reason: string | null;
}

export interface MigrateOptions {
  /** The sql/ folder to install from (tests install old releases kept under test/fixtures). */
  readonly sqlDir?: URL;
  /** How long to wait for another session's migrate (MIGRATE_LOCK_WAIT_MS). */
  readonly lockWaitMs?: number;
}

/**
 * Installs or upgrades the ml schema: frozen numbered migrations once each, every in its own
 * transaction, then all function files (CREATE OR REPLACE) and the rebuild of every
 * deployment's generated objects in one transaction. Safe to run concurrently: an advisory lock
 * serialises callers, and the later ones find nothing to do.
 */
export async function migrate(client: pg.ClientBase, options: MigrateOptions = {}): Promise<MigrateResult> {
  const sqlDir = options.sqlDir ?? SQL_DIR;
  const [migrations, functions] = await Promise.all([readSqlFiles(sqlDir, 'migrations'), readSqlFiles(sqlDir, 'functions')]);
  const known = Math.max(...migrations.map((m) => versionOf(m.name)));
  await takeMigrateLock(client, options.lockWaitMs ?? MIGRATE_LOCK_WAIT_MS);
  try {
    await client.query(`
      CREATE SCHEMA IF NOT EXISTS ml;
      CREATE TABLE IF NOT EXISTS ml._migrations (
        version int PRIMARY KEY,
        name text NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now())`);
    const { rows } = await client.query<{ version: number }>('SELECT version FROM ml._migrations');
    const done = new Set(rows.map((row) => row.version));
    const newest = Math.max(0, ...done);
    if (newest > known) {
      throw new PgscoreError(`the ml schema is at version ${newest}, newer than this pgscore knows (${known})`, {
        hint: 'Upgrade pgscore; an older version must not rewrite the functions of a newer schema.',
      });
    }
    const applied: string[] = [];
    for (const migration of migrations) {
      const version = versionOf(migration.name);
      if (done.has(version)) continue;
      await inTransaction(client, migration.name, async () => {
        await client.query(migration.sql);
        await client.query('INSERT INTO ml._migrations (version, name) VALUES ($1, $2)', [version, migration.name]);
      });
      applied.push(migration.name);
    }
    let deployments: RebuiltDeployment[] = [];
    await inTransaction(client, 'functions', async () => {
      for (const file of functions) await applyFile(client, file);
      // Old releases (test fixtures) have no rebuild step.
      const { rows: rebuild } = await client.query<{ exists: boolean }>(
        "SELECT to_regprocedure('ml._rebuild_deployments()') IS NOT NULL AS exists");
      if (rebuild[0]?.exists) {
        deployments = (await client.query<RebuiltDeployment>('SELECT * FROM ml._rebuild_deployments()')).rows;
      }
      // The prediction log's partitions exist before any worker writes to it.
      const { rows: maintain } = await client.query<{ exists: boolean }>(
        "SELECT to_regprocedure('ml._maintain()') IS NOT NULL AS exists");
      if (maintain[0]?.exists) await client.query('SELECT ml._maintain()');
    });
    return { applied, schemaVersion: known, deployments };
  } finally {
    await client.query(MIGRATE_UNLOCK);
  }
}

async function takeMigrateLock(client: pg.ClientBase, waitMs: number): Promise<void> {
  const deadline = Date.now() + waitMs;
  for (let delay = 50; ; delay = Math.min(1_000, delay * 2)) {
    const { rows } = await client.query<{ locked: boolean }>(MIGRATE_TRY_LOCK);
    if (rows[0]?.locked) return;
    if (Date.now() + delay > deadline) break;
    await sleep(delay);
  }
  const { rows } = await client.query<{ pid: number; role: string; application: string; state: string }>(MIGRATE_LOCK_HOLDER);
  const holder = rows[0];
  const who = holder
    ? `session ${holder.pid} of role "${holder.role}"${holder.application ? ` (application "${holder.application}")` : ''}, ${holder.state}`
    : 'a session that has just ended';
  throw new PgscoreError(`another migrate runs, or a session holds pgscore's migrate lock (advisory lock 1885827939, 2): ${who}`, {
    hint: holder
      ? `Wait for it if it is a pgscore migrate; otherwise end it: SELECT pg_terminate_backend(${holder.pid});`
      : 'Run pgscore migrate again.',
  });
}

async function applyFile(client: pg.ClientBase, file: SqlFile): Promise<void> {
  try {
    await client.query(file.sql);
  } catch (error) {
    throw new PgscoreError(`sql/functions/${file.name} failed: ${(error as Error).message}`, { cause: error });
  }
}

async function inTransaction(client: pg.ClientBase, what: string, body: () => Promise<void>): Promise<void> {
  await client.query('BEGIN');
  try {
    await body();
    await client.query('COMMIT');
  } catch (error) {
    await client.query('ROLLBACK');
    if (error instanceof PgscoreError) throw error;
    throw new PgscoreError(`migration ${what} failed: ${(error as Error).message}`, { cause: error });
  }
}
