import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { Worker } from '../../src/worker/worker.js';
import { pick, type Scenario } from '../lib/context.js';
import { createFeatureTable, deploy, deploymentId, FEATURES, freshDatabase, MODELS, queueSize, SINGLE_INSERT_VALUES } from '../lib/db.js';
import { metric } from '../lib/result.js';
import { sleep, waitUntil } from '../lib/stats.js';
import { WORKER_DEFAULTS } from '../lib/worker.js';

const run = promisify(execFile);
const CLIENTS = [1, 4, 16];

async function findPgbench(): Promise<string | undefined> {
  for (const dir of (process.env.PATH ?? '').split(':')) {
    if (dir && existsSync(path.join(dir, 'pgbench'))) return path.join(dir, 'pgbench');
  }
  const versions = await readdir('/usr/lib/postgresql').catch(() => [] as string[]);
  for (const v of versions.sort().reverse()) {
    const candidate = `/usr/lib/postgresql/${v}/bin/pgbench`;
    if (existsSync(candidate)) return candidate;
  }
  return undefined;
}

/** Transactions per second of single-row INSERTs from `clients` connections for `seconds`. */
async function pgbenchTps(pgbench: string, url: string, script: string, clients: number, seconds: number): Promise<number> {
  const { stdout } = await run(pgbench, ['-n', '-M', 'prepared', '-c', String(clients), '-j', String(Math.min(clients, 2)), '-T', String(seconds), '-f', script, url], {
    maxBuffer: 16 * 1024 * 1024,
  });
  const match = /tps = ([\d.]+) \((?:without initial connection time|excluding connections establishing)\)/.exec(stdout);
  if (!match) throw new Error(`cannot read tps from pgbench output:\n${stdout}`);
  return Number(match[1]);
}

/** The same with node clients (when no pgbench is installed). */
async function nodeTps(url: string, table: string, clients: number, seconds: number): Promise<number> {
  const sql = `INSERT INTO ${table} (${FEATURES.join(', ')}) VALUES (${SINGLE_INSERT_VALUES})`;
  const conns = await Promise.all(Array.from({ length: clients }, async () => {
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    return c;
  }));
  let done = 0;
  const started = performance.now();
  const end = started + seconds * 1000;
  await Promise.all(conns.map(async (c) => {
    while (performance.now() < end) {
      await c.query({ name: 'ins', text: sql });
      done++;
    }
  }));
  const tps = done / ((performance.now() - started) / 1000);
  await Promise.all(conns.map((c) => c.end()));
  return tps;
}

export const oltpIngest: Scenario = {
  id: '3',
  title: 'OLTP ingest cost (single-row INSERT transactions, with a deployment, its capture alone and with a running worker, ÷ without)',
  async run(ctx, out) {
    const seconds = pick(ctx, 1, 4);
    const reps = pick(ctx, 2, 3);
    const pgbench = await findPgbench();
    const db = await freshDatabase(ctx.server, 'oltp');
    // Deployments that capture from the WAL live in a database of their own: its worker reads the
    // replication slot, which must not run beside the other variants' measurements.
    const walDb = await freshDatabase(ctx.server, 'oltpwal');
    const dir = tmpdir();
    const scripts: Record<string, string> = {};
    const worker = new Worker(db.url, WORKER_DEFAULTS, ctx.log);
    const walWorker = new Worker(walDb.url, WORKER_DEFAULTS, ctx.log);
    try {
      await createFeatureTable(db, 't_plain');
      for (const model of MODELS) {
        await createFeatureTable(db, `t_${model}`);
        await deploy(db, `t_${model}`, model);
        await createFeatureTable(walDb, `w_${model}`);
        await deploy(walDb, `w_${model}`, model, `w_${model}`, { capture: 'wal' });
      }
      const variants = ['t_plain', ...MODELS.map((m) => `t_${m}`), ...MODELS.map((m) => `w_${m}`)];
      const dbOf = (table: string) => (table.startsWith('w_') ? walDb : db);
      for (const table of variants) {
        scripts[table] = path.join(dir, `pgscore-bench-${process.pid}-${table}.sql`);
        await writeFile(scripts[table]!, `INSERT INTO ${table} (${FEATURES.join(', ')}) VALUES (${SINGLE_INSERT_VALUES});\n`);
      }
      /** tx/s of single-row INSERTs into an emptied `table` from `clients` clients. */
      const measure = async (table: string, clients: number): Promise<number> => {
        const target = dbOf(table);
        await target.query(`TRUNCATE ${table}`);
        await target.query('CHECKPOINT');
        return pgbench ? pgbenchTps(pgbench, target.url, scripts[table]!, clients, seconds) : nodeTps(target.url, table, clients, seconds);
      };
      /** Rows of a table not scored yet (for WAL capture: also those not read from the WAL yet). */
      const unscored = async (table: string) =>
        Number((await dbOf(table).query<{ n: string }>(`SELECT count(*) AS n FROM ${table} WHERE label IS NULL`))[0]!.n);
      const tps: Record<string, number[]> = {};
      const backlog: Record<string, number[]> = {};
      // The capture alone: the same deployments before the worker starts, rows left queued (the
      // queue is emptied after each run, so that the worker does not start on a backlog).
      const capture: Record<string, number[]> = {};
      for (let rep = 0; rep < reps; rep++) {
        for (const clients of CLIENTS) {
          for (const table of variants) {
            (capture[`${table}.${clients}`] ??= []).push(await measure(table, clients));
            if (table.startsWith('t_') && table !== 't_plain') await db.query(`TRUNCATE ml.${pg.escapeIdentifier(`_queue_${await deploymentId(db, table)}`)}`);
          }
          ctx.progress(`oltp capture alone rep ${rep + 1}/${reps}, ${clients} clients`);
        }
      }
      await worker.start();
      await walWorker.start();
      for (const model of MODELS) await waitUntil(async () => (await unscored(`w_${model}`)) === 0, 'the WAL worker to start', 60_000, 50);
      for (let rep = 0; rep < reps; rep++) {
        for (const clients of CLIENTS) {
          for (const table of variants) {
            (tps[`${table}.${clients}`] ??= []).push(await measure(table, clients));
            if (table !== 't_plain') {
              (backlog[`${table}.${clients}`] ??= []).push(await unscored(table));
              // Let the worker finish before the next run, so it does not compete with the next baseline.
              try {
                await waitUntil(async () => (await unscored(table)) === 0 && (await queueSize(dbOf(table), table)) === 0,
                  `${table} to be scored`, 120_000, 50);
              } catch (error) {
                // A stall of the capture from the WAL is a finding to report, not a reason to stop measuring.
                if (!table.startsWith('w_')) throw error;
                out.notes.push(`STALL: ${table} (capture from the WAL), ${clients} clients, rep ${rep + 1}: ${await unscored(table)} rows still not scored 120 s after the run.`);
              }
              await sleep(200);
            }
          }
          ctx.progress(`oltp rep ${rep + 1}/${reps}, ${clients} clients`);
        }
      }
      for (const clients of CLIENTS) {
        const plain = tps[`t_plain.${clients}`]!;
        out.metrics.push(metric('3 OLTP ingest', '-', `tx/s without deployment, ${clients} clients`, 'tx/s', plain));
        for (const model of MODELS) {
          for (const [prefix, how] of [['t', 'trigger'], ['w', 'WAL']] as const) {
            const table = `${prefix}_${model}`;
            const label = prefix === 't' ? '' : ' (capture from the WAL)';
            const withTps = tps[`${table}.${clients}`]!;
            out.metrics.push(metric('3 OLTP ingest', model, `tx/s with deployment${label}, ${clients} clients`, 'tx/s', withTps));
            const ratio = metric('3 OLTP ingest', model, `with ÷ without${label}, ${clients} clients`, 'ratio', withTps.map((v, i) => v / plain[i]!), clients === 16 ? { op: '>=', value: 0.7 } : undefined);
            out.metrics.push(clients === 16 ? { ...ratio, goal: `oltp16${how === 'WAL' ? 'wal' : ''}` } : ratio);
            // Ratios within a capture-alone round: without and with ran back to back there too.
            const capturePlain = capture[`t_plain.${clients}`]!;
            const captureRatio = metric('3 OLTP ingest', model, `capture alone${label} (no worker${how === 'WAL' ? ', slot not read' : ', rows left queued'}) ÷ without, ${clients} clients`, 'ratio',
              capture[`${table}.${clients}`]!.map((v, i) => v / capturePlain[i]!), clients === 16 ? { op: '>=', value: 0.9 } : undefined);
            out.metrics.push(clients === 16 ? { ...captureRatio, goal: `oltp16capture${how === 'WAL' ? 'wal' : ''}` } : captureRatio);
            out.metrics.push(metric('3 OLTP ingest', model, `rows not scored at end of run${label}, ${clients} clients`, 'rows', backlog[`${table}.${clients}`]!));
          }
        }
      }
      out.notes.push(
        `${pgbench ? `pgbench (${pgbench}) -M prepared -T ${seconds} with a one-line custom script (INSERT of 30 random reals)` : `node clients (pgbench not found), ${seconds} s`}; per repetition and client count: without, with logreg, with gbm back to back, first with no worker running (the capture alone: the statement trigger and the queue insert; the rows stay queued, and the queue is emptied after each run), then with a notify worker. The WAL-captured variants (w_) are deployed with "capture": "wal" in a database of their own, with a worker of their own that reads the replication slot (its walsender decodes all WAL, the other variants' too, while it runs); their capture alone has no reader (wal_level = logical for all variants). The worker (defaults: batch 1000, concurrency 2, 1 ORT thread) runs in the bench process throughout, and scores the rows while they arrive; "queue left" is what it had not scored when the run ended.`,
      );
    } finally {
      await worker.stop().catch(() => undefined);
      await walWorker.stop().catch(() => undefined);
      for (const file of Object.values(scripts)) await rm(file, { force: true });
      await db.close();
      await walDb.close();
    }
  },
};
