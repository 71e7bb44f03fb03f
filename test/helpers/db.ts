import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import pg from 'pg';
import { inject } from 'vitest';
import { createLogger } from '../../src/log.js';
import { pushModel } from '../../src/models/registry.js';
import { Worker } from '../../src/worker/worker.js';
import { withDatabase } from './global-postgres.js';

export interface TestDatabase {
  /** As the superuser that owns the ml schema (the DBA). */
  readonly url: string;
  /** As a member of pgscore_worker: what workers and relays connect with. */
  readonly workerUrl: string;
  readonly pool: pg.Pool;
  /** Runs one statement and returns its rows. */
  sql<T extends pg.QueryResultRow = Record<string, unknown>>(text: string, values?: unknown[]): Promise<T[]>;
  drop(): Promise<void>;
}

/** A fresh database with the ml schema, cloned from the suite's template. */
export async function createTestDatabase(): Promise<TestDatabase> {
  const adminUrl = inject('adminUrl');
  const name = `pgscore_test_${randomBytes(5).toString('hex')}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name} TEMPLATE ${inject('templateDatabase')}`);
  await admin.end();
  const url = withDatabase(adminUrl, name);
  const pool = new pg.Pool({ connectionString: url, max: 6 });
  pool.on('error', () => undefined);
  return {
    url,
    workerUrl: withDatabase(inject('workerUrl'), name),
    pool,
    async sql<T extends pg.QueryResultRow>(text: string, values?: unknown[]) {
      return (await pool.query<T>(text, values)).rows;
    },
    async drop() {
      await pool.end();
      const dropper = new pg.Client({ connectionString: adminUrl });
      await dropper.connect();
      await dropReplicationSlots(dropper, name);
      await dropper.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await dropper.end();
    },
  };
}

/** A database with a replication slot (WAL capture) cannot be dropped: its slots go first, readers stopped. */
async function dropReplicationSlots(admin: pg.Client, database: string): Promise<void> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const { rows } = await admin.query<{ slot_name: string; active_pid: number | null }>(
      'SELECT slot_name, active_pid FROM pg_replication_slots WHERE database = $1', [database]);
    if (rows.length === 0) return;
    for (const slot of rows) {
      if (slot.active_pid !== null) await admin.query('SELECT pg_terminate_backend($1)', [slot.active_pid]);
      else await admin.query('SELECT pg_drop_replication_slot($1)', [slot.slot_name]).catch(() => undefined);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

export const MODELS = new URL('../../examples/models/', import.meta.url);

export async function modelBytes(file: string): Promise<Buffer> {
  return readFile(new URL(file, MODELS));
}

/** Registers an example model the way `pgscore model push` does. */
export async function push(db: TestDatabase, name: string, file: string, promote = false): Promise<number> {
  return (await pushModel(db.pool, name, await modelBytes(file), { promote })).version;
}

export const quietLog = createLogger(process.env.TEST_LOG_LEVEL ?? 'silent');

type WorkerSettings = ConstructorParameters<typeof Worker>[1];

export const WORKER_DEFAULTS: WorkerSettings = {
  batchSize: 1000,
  maxWaitMs: 0,
  pollIntervalMs: 200,
  concurrency: 2,
  ortThreads: 1,
};

export async function startWorker(db: TestDatabase, overrides: Partial<WorkerSettings> = {}): Promise<Worker> {
  const worker = new Worker(db.workerUrl, { ...WORKER_DEFAULTS, ...overrides }, quietLog);
  await worker.start();
  return worker;
}

/** Polls until check returns a truthy value, or fails with the last value seen. */
export async function waitFor<T>(
  check: () => Promise<T | false | null | undefined>,
  what: string,
  timeoutMs = 60_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: T | false | null | undefined;
  while (Date.now() < deadline) {
    last = await check();
    if (last) return last;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${JSON.stringify(last)})`);
}

/** Rows of a deployment's queue. */
export async function pending(db: TestDatabase, deployment: string): Promise<number> {
  const rows = await db.sql<{ pending: string | null }>('SELECT pending FROM ml.status WHERE deployment = $1', [deployment]);
  return Number(rows[0]?.pending ?? 0);
}
