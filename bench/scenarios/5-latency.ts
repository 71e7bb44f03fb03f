import { pick, type Context, type Scenario } from '../lib/context.js';
import { createFeatureTable, deploy, freshDatabase, MODELS, queueSize, type BenchDatabase } from '../lib/db.js';
import { measureLatency, type LatencyRun } from '../lib/latency.js';
import { fmt, metric, type Metric, type ModelKey } from '../lib/result.js';
import { sleep, waitUntil } from '../lib/stats.js';
import { spawnPgscore, type Child } from '../lib/worker.js';

export const LATENCY_RATE = 1000;

export function latencyOptions(ctx: Context, seconds = pick(ctx, 10, 60)) {
  return { rate: LATENCY_RATE, seconds, windows: pick(ctx, 5, 6), warmupSeconds: pick(ctx, 0.5, 3), pollEveryMs: 1 };
}

export function latencyMetrics(scenario: string, model: ModelKey, label: string, run: LatencyRun, targets: { p50?: number; p99?: number }): Metric[] {
  return [
    metric(scenario, model, `${label} p50`, 'ms', run.windows.map((w) => w.p50), targets.p50 ? { op: '<=', value: targets.p50 } : undefined),
    metric(scenario, model, `${label} p95`, 'ms', run.windows.map((w) => w.p95)),
    metric(scenario, model, `${label} p99`, 'ms', run.windows.map((w) => w.p99), targets.p99 ? { op: '<=', value: targets.p99 } : undefined),
  ];
}

function describeRun(label: string, model: ModelKey, run: LatencyRun): string {
  const o = run.overall;
  return `${label} ${model}: ${o.n} rows measured, INSERTs offered at ${fmt(run.offeredRate)} rows/s; whole run p50 ${o.p50.toFixed(1)} / p95 ${o.p95.toFixed(1)} / p99 ${o.p99.toFixed(1)} / max ${o.max.toFixed(1)} ms; ${run.polls} polls, median poll round trip ${run.pollRttMedianMs.toFixed(2)} ms${run.unseen ? `; ${run.unseen} rows never seen scored` : ''}.`;
}

async function workerStatus(db: BenchDatabase, deployment: string): Promise<string> {
  const rows = await db.query<{ latency_p50_ms: number | null; latency_p99_ms: number | null }>('SELECT latency_p50_ms, latency_p99_ms FROM ml.status WHERE deployment = $1', [deployment]);
  return `ml.status (worker's own queued→committed, last minute): p50 ${rows[0]?.latency_p50_ms ?? '–'} ms, p99 ${rows[0]?.latency_p99_ms ?? '–'} ms`;
}

export const realtimeLatency: Scenario = {
  id: '5',
  title: 'Real-time latency (steady 1k rows/s single-row INSERTs: commit → prediction visible)',
  async run(ctx, out) {
    const db = await freshDatabase(ctx.server, 'latency');
    const options = latencyOptions(ctx);
    try {
      for (const model of MODELS) {
        await createFeatureTable(db, `t_${model}`);
        await deploy(db, `t_${model}`, model);
      }
      const kafka = await ctx.kafka();
      for (const transport of ['notify', 'kafka'] as const) {
        if (transport === 'kafka' && !kafka.ok) continue;
        for (const model of MODELS) {
          if (transport === 'kafka' && ctx.quick && model !== 'logreg') continue; // quick: Kafka on one model
          const table = `t_${model}`;
          await db.query(`TRUNCATE ${table}`);
          const env: Record<string, string> = { DATABASE_URL: db.url };
          const children: Child[] = [];
          try {
            if (transport === 'notify') {
              children.push(spawnPgscore(['worker'], env, 'worker ready'));
            } else if (kafka.ok) {
              const tag = `lat-${model}-${process.pid}`;
              Object.assign(env, { KAFKA_BROKERS: kafka.brokers.join(','), PGSCORE_KAFKA_TOPIC: `bench.${tag}`, PGSCORE_KAFKA_GROUP: `bench-${tag}` });
              children.push(spawnPgscore(['worker', '--transport', 'kafka'], env, 'worker ready'));
              children.push(spawnPgscore(['relay'], env, 'relay ready'));
            }
            for (const child of children) await child.ready;
            await sleep(500);
            const run = await measureLatency(db.url, table, options);
            const [p50, p95, p99] = latencyMetrics('5 latency', model, `${transport} commit→visible`, run, transport === 'notify' ? { p50: 5, p99: 25 } : { p99: 100 });
            const offered = `at ${fmt(run.offeredRate)} rows/s offered`;
            out.metrics.push(
              ...(transport === 'notify' ? [{ ...p50!, note: offered, goal: 'notifyP50' }] : [p50!]),
              p95!,
              { ...p99!, note: offered, goal: transport === 'notify' ? 'notifyP99' : 'kafkaP99' },
            );
            out.notes.push(describeRun(transport, model, run) + (transport === 'notify' ? ` ${await workerStatus(db, table)}.` : ''));
            ctx.shared.set(`latency.${transport}.${model}.p50`, run.overall.p50);
            ctx.shared.set(`latency.${transport}.${model}.p99`, run.overall.p99);
            ctx.progress(`latency ${transport} ${model}: p50 ${run.overall.p50.toFixed(1)} ms, p99 ${run.overall.p99.toFixed(1)} ms`);
            await waitUntil(async () => (await queueSize(db, table)) === 0, 'queue to drain', 60_000);
          } finally {
            for (const child of children.reverse()) await child.stop();
          }
        }
      }
      out.notes.unshift(
        `Method: ${LATENCY_RATE} single-row INSERTs per second (autocommit, 8 connections, paced on a 1 ms timer) for ${options.seconds} s after ${options.warmupSeconds} s of warm-up; the commit time is when INSERT … RETURNING id returns to the app. A second connection polls \`SELECT id FROM t WHERE id = ANY(<outstanding ids>) AND p1 IS NOT NULL\` every ~1 ms (no LISTEN); a row counts as visible when the first poll that shows it returns, so figures are upper bounds by up to ~1 poll interval + 1 poll round trip. The worker (and for Kafka the relay) runs as \`pgscore worker\` / \`pgscore relay\` child processes with default settings. Each repetition is one ${options.seconds / options.windows} s window of the run (by insert time); median/min/max are over windows.` +
          (kafka.ok ? '' : ` Kafka variant skipped: ${kafka.reason}.`),
      );
    } finally {
      await db.close();
    }
  },
};
