/**
 * `npm run bench [-- --quick] [-- --only 1,4] [-- --pg15]`: starts an embedded Postgres (with
 * --pg15 or BENCH_PG=15 Debian's postgresql-15; or uses BENCH_DATABASE_URL), runs every scenario
 * in bench/scenarios, prints a table and writes bench/results/<date>.json and .md (quick runs:
 * <date>-quick.*, Postgres 15 runs: …-pg15.*) with SVG charts.
 * Exits 1 only when a scenario threw; timings never fail the run.
 */
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { createLogger } from '../src/log.js';
import { ensureKafkaJars, kafkaAvailable, startKafkaBroker, type KafkaBroker } from '../test/helpers/kafka-broker.js';
import type { Context, KafkaSetup, Scenario } from './lib/context.js';
import { printTable, writeReport } from './lib/report.js';
import type { ScenarioOutcome } from './lib/result.js';
import { serverSettings, startServer } from './lib/server.js';
import { rawScoring } from './scenarios/1-raw-scoring.js';
import { bulkIngest } from './scenarios/2-bulk-ingest.js';
import { oltpIngest } from './scenarios/3-oltp-ingest.js';
import { backlogDrain } from './scenarios/4-backlog-drain.js';
import { realtimeLatency } from './scenarios/5-latency.js';
import { restPattern } from './scenarios/6-rest-pattern.js';
import { workerMemory } from './scenarios/7-worker-memory.js';
import { isolation } from './scenarios/8-isolation.js';
import { lifecycleCost } from './scenarios/9-lifecycle-cost.js';
import { monitoringCost } from './scenarios/10-monitoring-cost.js';
import { contenders } from './scenarios/11-contenders.js';
import { scaleOut } from './scenarios/12-scale-out.js';
import { manyDeployments } from './scenarios/13-many-deployments.js';

const SCENARIOS: Scenario[] = [rawScoring, bulkIngest, oltpIngest, backlogDrain, realtimeLatency, restPattern, workerMemory, isolation, lifecycleCost, monitoringCost, contenders, scaleOut, manyDeployments];

const args = process.argv.slice(2);
const quick = args.includes('--quick');
const onlyArg = args.find((a) => a.startsWith('--only'));
const only = onlyArg ? (onlyArg.includes('=') ? onlyArg.split('=')[1]! : args[args.indexOf(onlyArg) + 1]!).split(',') : undefined;
const noKafka = args.includes('--no-kafka') || process.env.BENCH_KAFKA === '0';
const pg15 = args.includes('--pg15') || process.env.BENCH_PG === '15';

// A stray rejection in a scenario's background loop must not kill the run (and the report) with it.
process.on('unhandledRejection', (error) => progress(`unhandled rejection (ignored): ${(error as Error)?.stack ?? String(error)}`));

const t0 = performance.now();
const loadAtStart = os.loadavg()[0]!.toFixed(2);
const elapsed = () => `${((performance.now() - t0) / 1000).toFixed(0).padStart(4)} s`;
const progress = (message: string) => process.stderr.write(`[bench ${elapsed()}] ${message}\n`);

progress(`${quick ? 'quick' : 'full'} run${only ? `, scenarios ${only.join(',')}` : ''}${pg15 ? ', Postgres 15' : ''}`);
const server = await startServer(pg15 ? { pg: 15 } : {}).catch((error: unknown) => {
  progress(`Postgres did not start: ${(error as Error).message}`);
  process.exit(1);
});
let broker: KafkaBroker | undefined;
let kafkaSetup: Promise<KafkaSetup> | undefined;
const kafka = () =>
  (kafkaSetup ??= (async (): Promise<KafkaSetup> => {
    if (noKafka) return { ok: false, reason: 'disabled with --no-kafka / BENCH_KAFKA=0' };
    const available = await kafkaAvailable();
    if (!available.ok) return { ok: false, reason: available.reason };
    try {
      await ensureKafkaJars();
      broker = await startKafkaBroker();
      progress(`Kafka broker at ${broker.brokers.join(',')}`);
      const started = broker;
      return { ok: true, brokers: started.brokers, pid: () => started.pid };
    } catch (error) {
      return { ok: false, reason: `the Kafka broker did not start: ${(error as Error).message.split('\n')[0]}` };
    }
  })());

// Ctrl-C / SIGTERM: stop the broker and the embedded Postgres instead of leaving them behind.
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    progress(`${signal}: stopping`);
    void Promise.allSettled([broker?.close(), server.stop()]).then(() => process.exit(130));
  });
}

const shared = new Map<string, number>();
// Quick (smoke) runs start the broker in the background at once, to fit in 3 minutes; full runs start it when first needed.
if (quick) void kafka();
const ctx: Context = { quick, server, log: createLogger('silent'), shared, kafka, progress };
const outcomes: ScenarioOutcome[] = [];
let settings: Record<string, string> = {};
try {
  settings = await serverSettings(server.adminUrl);
  for (const scenario of SCENARIOS) {
    if (only && !only.includes(scenario.id)) continue;
    progress(`scenario ${scenario.id}: ${scenario.title}`);
    const started = performance.now();
    const out = { metrics: [] as ScenarioOutcome['metrics'], notes: [] as string[] };
    let error: string | undefined;
    try {
      await scenario.run(ctx, out);
    } catch (e) {
      error = (e as Error).stack ?? String(e);
      progress(`scenario ${scenario.id} FAILED: ${error}`);
    }
    outcomes.push({ id: scenario.id, title: scenario.title, ...out, ...(error ? { error } : {}), seconds: (performance.now() - started) / 1000 });
  }
} finally {
  if (broker) await broker.close().catch(() => undefined);
  await server.stop().catch((e: unknown) => progress(`could not stop Postgres: ${String(e)}`));
}

const date = new Date().toISOString().slice(0, 10);
const kafkaState = kafkaSetup ? await kafkaSetup : undefined;
const cpus = os.cpus();
const files = await writeReport(
  fileURLToPath(new URL('./results/', import.meta.url)),
  `${date}${quick ? '-quick' : ''}${pg15 ? '-pg15' : ''}`,
  {
    date,
    mode: quick ? 'quick' : 'full',
    startedAt: new Date(Date.now() - (performance.now() - t0)).toISOString(),
    seconds: (performance.now() - t0) / 1000,
    machine: { cpus: cpus.length, cpuModel: cpus[0]?.model ?? '?', memGiB: Math.round(os.totalmem() / 2 ** 30), node: process.version, postgres: `Postgres ${settings.server_version ?? '?'}`, os: `${os.type()} ${os.release()}`, loadAvg: `${loadAtStart} / ${os.loadavg()[0]!.toFixed(2)}` },
    database: server.description,
    settings,
    command: `${process.env.BENCH_PG ? `BENCH_PG=${process.env.BENCH_PG} ` : ''}npm run bench${args.length ? ` -- ${args.join(' ')}` : ''}`,
    kafka: !kafkaState ? 'not used' : kafkaState.ok ? `local single-node broker (${kafkaState.brokers.join(',')})` : `skipped (${kafkaState.reason})`,
  },
  outcomes,
  shared,
);
printTable(outcomes);
progress(`wrote ${files.md} and ${files.json}`);
const failed = outcomes.filter((o) => o.error);
if (failed.length > 0) {
  progress(`${failed.length} scenario(s) threw: ${failed.map((o) => o.id).join(', ')}`);
  process.exitCode = 1;
}
// Every server, broker and child is stopped by now; a stray handle (a client library's timer) must not keep CI waiting.
process.exit(process.exitCode ?? 0);
