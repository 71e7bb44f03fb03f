import { mkdtemp, chmod, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import type { TestProject } from 'vitest/node';
import { migrate } from '../../src/db/migrate.js';
import { connectionAs, createWorkerRole } from '../../src/db/roles.js';
import { startEmbeddedPostgres, type EmbeddedServer } from '../../src/embedded/postgres.js';
import { onFreePort } from './ports.js';

declare module 'vitest' {
  export interface ProvidedContext {
    /** Connection string of a database on the test server; tests swap the database name. */
    adminUrl: string;
    /** The same server, logging in as a member of pgscore_worker (workers refuse superusers). */
    workerUrl: string;
    templateDatabase: string;
  }
}

export const TEMPLATE = 'pgscore_template';
export const WORKER_ROLE = 'pgscore_test_worker';
const WORKER_PASSWORD = 'pgscore';

/**
 * One Postgres server for the integration suite: Debian's (or any) through TEST_DATABASE_URL, or
 * an embedded one. A template database with the ml schema installed is cloned per test file.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  let server: EmbeddedServer | undefined;
  let dataRoot: string | undefined;
  let adminUrl = process.env.TEST_DATABASE_URL;
  if (!adminUrl) {
    // The server may run as the `postgres` user (when tests run as root): it needs to reach this folder.
    dataRoot = await mkdtemp(path.join(tmpdir(), 'pgscore-test-'));
    await chmod(dataRoot, 0o755);
    const dataDir = path.join(dataRoot, 'data');
    server = await onFreePort((port) => startEmbeddedPostgres({ dataDir, port }));
    adminUrl = server.url('postgres');
  }

  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  await admin.query(`DROP DATABASE IF EXISTS ${TEMPLATE}`);
  await admin.query(`CREATE DATABASE ${TEMPLATE}`);
  await admin.end();
  const template = new pg.Client({ connectionString: withDatabase(adminUrl, TEMPLATE) });
  await template.connect();
  await migrate(template);
  await createWorkerRole(template, WORKER_ROLE, WORKER_PASSWORD, { replication: true });
  await template.end();

  project.provide('adminUrl', adminUrl);
  project.provide('workerUrl', connectionAs(adminUrl, WORKER_ROLE, WORKER_PASSWORD));
  project.provide('templateDatabase', TEMPLATE);

  return async () => {
    await server?.stop();
    if (dataRoot) await rm(dataRoot, { recursive: true, force: true });
  };
}

export function withDatabase(url: string, database: string): string {
  const parsed = new URL(url);
  parsed.pathname = `/${database}`;
  return parsed.toString();
}
