/**
 * What the deployment trigger's wake-up costs writers (not part of `npm run bench`):
 *   node --import tsx bench/profile/wake-cost.ts [--seconds 8] [--clients 8] [--reps 2]
 * pgbench (Debian's, /usr/bin/pgbench) runs single-row INSERTs (autocommit, 30 features) from
 * --clients connections into: a table with no deployment; a deployed table with a worker running;
 * the same while a role outside pgscore holds the old idle key (1885827939, 1) in shared mode
 * (which made every writer send a NOTIFY before locks moved to ml._wake); a deployed table with
 * no worker. Prints transactions per second, best of --reps. Run it from an older checkout for
 * the figures before.
 */
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { createLogger } from '../../src/log.js';
import { Worker } from '../../src/worker/worker.js';
import { createFeatureTable, deploy, FEATURES, freshDatabase, SINGLE_INSERT_VALUES, startServer } from '../lib/db.js';
import { WORKER_DEFAULTS } from '../lib/worker.js';

const args = process.argv.slice(2);
const value = (flag: string, fallback: string) => (args.includes(flag) ? args[args.indexOf(flag) + 1]! : fallback);
const seconds = Number(value('--seconds', '8'));
const clients = Number(value('--clients', '8'));
const reps = Number(value('--reps', '2'));

const server = await startServer();
const db = await freshDatabase(server, 'wake_cost');
const dir = await mkdtemp(path.join(tmpdir(), 'pgscore-wake-cost-'));
try {
  await createFeatureTable(db, 'plain');
  await createFeatureTable(db, 'scored');
  await deploy(db, 'scored', 'logreg');
  await db.query(`DROP ROLE IF EXISTS wake_outsider`);
  await db.query(`CREATE ROLE wake_outsider LOGIN PASSWORD 'outsider'`);

  const tps = async (table: string): Promise<number> => {
    const script = path.join(dir, `${table}.sql`);
    await writeFile(script, `INSERT INTO ${table} (${FEATURES.join(', ')}) VALUES (${SINGLE_INSERT_VALUES});\n`);
    let best = 0;
    for (let i = 0; i < reps; i++) {
      const out = execFileSync('pgbench', ['-n', '-c', String(clients), '-j', String(Math.min(clients, 2)), '-T', String(seconds), '-f', script, db.url],
        { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
      const match = /tps = ([\d.]+)/.exec(out);
      best = Math.max(best, Number(match?.[1] ?? 0));
    }
    return best;
  };

  const results: [string, number][] = [];
  results.push(['no deployment', await tps('plain')]);
  results.push(['deployed, no worker', await tps('scored')]);
  const worker = new Worker(db.url, { ...WORKER_DEFAULTS, allowSuperuser: true }, createLogger('silent'));
  await worker.start();
  try {
    results.push(['deployed, worker running', await tps('scored')]);
    const outsiderUrl = new URL(db.url);
    outsiderUrl.username = 'wake_outsider';
    outsiderUrl.password = 'outsider';
    const outsider = new pg.Client({ connectionString: outsiderUrl.toString() });
    await outsider.connect();
    await outsider.query('SELECT pg_advisory_lock_shared(1885827939, 1)');
    try {
      results.push(['deployed, worker running, outsider holds (1885827939, 1) shared', await tps('scored')]);
    } finally {
      await outsider.end();
    }
  } finally {
    await worker.stop();
  }
  console.log(`single-row INSERT, ${clients} clients, ${seconds} s, best of ${reps} (pgbench tps):`);
  for (const [what, n] of results) console.log(`  ${what.padEnd(66)} ${n.toFixed(0)}`);
} finally {
  await rm(dir, { recursive: true, force: true });
  await db.close();
  await server.stop();
}
