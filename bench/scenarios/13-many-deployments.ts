import { startMetrics } from '../../src/metrics/metrics.js';
import { Worker } from '../../src/worker/worker.js';
import { pick, type Scenario } from '../lib/context.js';
import { createFeatureTable, deploy, FEATURES, freshDatabase } from '../lib/db.js';
import { measureLatency, type LatencyRun } from '../lib/latency.js';
import { metric } from '../lib/result.js';
import { sleep, waitUntil } from '../lib/stats.js';
import { WORKER_DEFAULTS } from '../lib/worker.js';

const RATE = 200;
const IDLE_SECONDS = 10;

/**
 * Many deployments (issue 15): a healthy deployment's commit → prediction latency alone, then
 * beside N idle deployments on the same worker; the idle worker's transactions and CPU; the
 * /metrics series. Before, the drain visited every deployment in turn: with 200 idle ones the
 * healthy p50 went from 6.0 to 30.1 ms, with 300 its p99 reached 1.4-1.9 s, the idle worker's CPU
 * rose 11× and /metrics grew from 592 to 2,392 series.
 */
export const manyDeployments: Scenario = {
  id: '13',
  title: 'Many deployments (a healthy deployment beside idle ones)',
  async run(ctx, out) {
    const db = await freshDatabase(ctx.server, 'many');
    const idleCount = pick(ctx, 300, 1000);
    const options = { rate: RATE, seconds: pick(ctx, 6, 20), windows: pick(ctx, 3, 5), warmupSeconds: 1, pollEveryMs: 1 };
    const log = ctx.log;
    const worker = new Worker(db.url, { ...WORKER_DEFAULTS }, log);
    await createFeatureTable(db, 'healthy');
    await deploy(db, 'healthy', 'logreg');
    await worker.start();
    const metrics = await startMetrics('worker', worker, db.url, { metricsHost: '127.0.0.1', metricsPort: 20_000 + Math.floor(Math.random() * 20_000) }, log);
    if (!metrics) throw new Error('no metrics server');
    const series = async () => (await (await fetch(metrics.url)).text()).split('\n').filter((line) => line.startsWith('pgscore_') && !line.startsWith('pgscore_process') && !line.startsWith('pgscore_nodejs')).length;
    /** The idle worker over IDLE_SECONDS: transactions of the database, CPU seconds of this process. */
    const idle = async () => {
      const commits = async () => Number((await db.query<{ n: string }>('SELECT xact_commit AS n FROM pg_stat_database WHERE datname = current_database()'))[0]!.n);
      const before = await commits();
      const cpu = process.cpuUsage();
      await sleep(IDLE_SECONDS * 1000);
      const used = process.cpuUsage(cpu);
      return { xacts: (await commits()) - before, cpuMs: (used.user + used.system) / 1000 };
    };
    try {
      await sleep(500);
      const alone = await measureLatency(db.url, 'healthy', options);
      const idleAlone = await idle();
      const seriesAlone = await series();

      ctx.progress(`many deployments: creating ${idleCount} idle deployments`);
      for (let from = 1; from <= idleCount; from += 50) {
        await db.query(`
          DO $$ BEGIN
            FOR i IN ${from}..${Math.min(idleCount, from + 49)} LOOP
              EXECUTE format('CREATE TABLE idle_%s (id bigserial PRIMARY KEY, ${FEATURES.map((f) => `${f} real`).join(', ')}, label bigint, p1 real)', i);
              PERFORM ml.deploy('idle_' || i, format('idle_%s', i)::regclass, 'logreg', '${JSON.stringify({ X: FEATURES })}', '{"label": "label", "p1": "probabilities[1]"}', '{"backfill": false}');
            END LOOP;
          END $$`);
      }
      await waitUntil(async () => worker.deployments.length === idleCount + 1, 'the worker to load every deployment', 300_000);
      await sleep(2000);
      const beside = await measureLatency(db.url, 'healthy', options);
      const idleBeside = await idle();
      const seriesBeside = await series();

      const p = (run: LatencyRun, key: 'p50' | 'p99') => run.windows.map((w) => w[key]);
      const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
      out.metrics.push(
        metric('13 many deployments', 'logreg', 'healthy commit→visible p50, alone', 'ms', p(alone, 'p50')),
        metric('13 many deployments', 'logreg', `healthy commit→visible p50, beside ${idleCount} idle`, 'ms', p(beside, 'p50')),
        metric('13 many deployments', 'logreg', 'healthy commit→visible p99, alone', 'ms', p(alone, 'p99')),
        metric('13 many deployments', 'logreg', `healthy commit→visible p99, beside ${idleCount} idle`, 'ms', p(beside, 'p99')),
        metric('13 many deployments', 'logreg', `p50 beside ${idleCount} idle ÷ p50 alone`, '×', p(beside, 'p50').map((v) => v / median(p(alone, 'p50'))), { op: '<=', value: 1.5 }),
        metric('13 many deployments', 'logreg', `p99 beside ${idleCount} idle ÷ p99 alone`, '×', p(beside, 'p99').map((v) => v / median(p(alone, 'p99'))), { op: '<=', value: 2 }),
        metric('13 many deployments', '-', `idle worker transactions per s, beside ${idleCount} idle ÷ alone`, '×', [idleBeside.xacts / Math.max(1, idleAlone.xacts)], { op: '<=', value: 2 }),
        metric('13 many deployments', '-', `idle worker CPU, beside ${idleCount} idle ÷ alone`, '×', [idleBeside.cpuMs / Math.max(1, idleAlone.cpuMs)], { op: '<=', value: 2 }),
        metric('13 many deployments', '-', `/metrics series (pgscore's own), beside ${idleCount} idle`, 'series', [seriesBeside], { op: '<=', value: seriesAlone + 50 }),
      );
      out.notes.push(
        `Method: ${RATE} single-row INSERTs/s into the healthy table for ${options.seconds} s (as scenario 5), first alone, then beside ${idleCount} deployments of the same model on tables nobody writes to, one in-process worker with default settings. Idle: ${IDLE_SECONDS} s with no writes; transactions from pg_stat_database.xact_commit (the whole database: the worker's lock poll and upkeep), CPU of the bench process (the worker runs in it). Alone: ${idleAlone.xacts} transactions, ${idleAlone.cpuMs.toFixed(0)} ms CPU, ${seriesAlone} series; beside: ${idleBeside.xacts} transactions, ${idleBeside.cpuMs.toFixed(0)} ms CPU, ${seriesBeside} series. Whole-run p50/p99: alone ${alone.overall.p50.toFixed(1)}/${alone.overall.p99.toFixed(1)} ms, beside ${beside.overall.p50.toFixed(1)}/${beside.overall.p99.toFixed(1)} ms.`,
      );
      ctx.progress(`many deployments: p50 alone ${alone.overall.p50.toFixed(1)} ms, beside ${beside.overall.p50.toFixed(1)} ms`);
    } finally {
      await metrics.close();
      await worker.stop();
      await db.close();
    }
  },
};
