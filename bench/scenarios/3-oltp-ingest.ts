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
    const dir = tmpdir();
    const scripts: Record<string, string> = {};
    const worker = new Worker(db.url, WORKER_DEFAULTS, ctx.log);
    try {
      await createFeatureTable(db, 't_plain');
      for (const model of MODELS) {
        await createFeatureTable(db, `t_${model}`);
        await deploy(db, `t_${model}`, model);
      }
      const variants = ['t_plain', ...MODELS.map((m) => `t_${m}`)];
      for (const table of variants) {
        scripts[table] = path.join(dir, `pgscore-bench-${process.pid}-${table}.sql`);
        await writeFile(scripts[table]!, `INSERT INTO ${table} (${FEATURES.join(', ')}) VALUES (${SINGLE_INSERT_VALUES});\n`);
      }
      /** tx/s of single-row INSERTs into an emptied `table` from `clients` clients. */
      const measure = async (table: string, clients: number): Promise<number> => {
        await db.query(`TRUNCATE ${table}`);
        await db.query('CHECKPOINT');
        return pgbench ? pgbenchTps(pgbench, db.url, scripts[table]!, clients, seconds) : nodeTps(db.url, table, clients, seconds);
      };
      const tps: Record<string, number[]> = {};
      const backlog: Record<string, number[]> = {};
      // The capture alone: the same deployments before the worker starts, rows left queued (the
      // queue is emptied after each run, so that the worker does not start on a backlog).
      const capture: Record<string, number[]> = {};
      for (let rep = 0; rep < reps; rep++) {
        for (const clients of CLIENTS) {
          for (const table of variants) {
            (capture[`${table}.${clients}`] ??= []).push(await measure(table, clients));
            if (table !== 't_plain') await db.query(`TRUNCATE ml.${pg.escapeIdentifier(`_queue_${await deploymentId(db, table)}`)}`);
          }
          ctx.progress(`oltp capture alone rep ${rep + 1}/${reps}, ${clients} clients`);
        }
      }
      await worker.start();
      for (let rep = 0; rep < reps; rep++) {
        for (const clients of CLIENTS) {
          for (const table of variants) {
            (tps[`${table}.${clients}`] ??= []).push(await measure(table, clients));
            if (table !== 't_plain') {
              (backlog[`${table}.${clients}`] ??= []).push(await queueSize(db, table));
              // Let the worker finish before the next run, so it does not compete with the next baseline.
              await waitUntil(async () => (await queueSize(db, table)) === 0, `queue of ${table} to drain`, 120_000, 50);
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
          const withTps = tps[`t_${model}.${clients}`]!;
          out.metrics.push(metric('3 OLTP ingest', model, `tx/s with deployment, ${clients} clients`, 'tx/s', withTps));
          const ratio = metric('3 OLTP ingest', model, `with ÷ without, ${clients} clients`, 'ratio', withTps.map((v, i) => v / plain[i]!), clients === 16 ? { op: '>=', value: 0.7 } : undefined);
          out.metrics.push(clients === 16 ? { ...ratio, goal: 'oltp16' } : ratio);
          // Ratios within a capture-alone round: without and with ran back to back there too.
          const capturePlain = capture[`t_plain.${clients}`]!;
          const captureRatio = metric('3 OLTP ingest', model, `capture alone (no worker, rows left queued) ÷ without, ${clients} clients`, 'ratio',
            capture[`t_${model}.${clients}`]!.map((v, i) => v / capturePlain[i]!), clients === 16 ? { op: '>=', value: 0.9 } : undefined);
          out.metrics.push(clients === 16 ? { ...captureRatio, goal: 'oltp16capture' } : captureRatio);
          out.metrics.push(metric('3 OLTP ingest', model, `queue left at end of run, ${clients} clients`, 'rows', backlog[`t_${model}.${clients}`]!));
        }
      }
      out.notes.push(
        `${pgbench ? `pgbench (${pgbench}) -M prepared -T ${seconds} with a one-line custom script (INSERT of 30 random reals)` : `node clients (pgbench not found), ${seconds} s`}; per repetition and client count: without, with logreg, with gbm back to back, first with no worker running (the capture alone: the statement trigger and the queue insert; the rows stay queued, and the queue is emptied after each run), then with a notify worker. The worker (defaults: batch 1000, concurrency 2, 1 ORT thread) runs in the bench process throughout, and scores the rows while they arrive; "queue left" is what it had not scored when the run ended.`,
      );
    } finally {
      await worker.stop().catch(() => undefined);
      for (const file of Object.values(scripts)) await rm(file, { force: true });
      await db.close();
    }
  },
};
