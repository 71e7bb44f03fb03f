/**
 * Where the Kafka path spends its time (not part of `npm run bench`):
 *   node --import tsx bench/profile/kafka.ts [drain] [latency] [--n 30000] [--reps 1] [--notify]
 *        [--cpu-prof] [--set KEY=VALUE ...]
 * drain: the relay and one Kafka worker (forked processes, bench/profile/kafka-role.ts) on a queued
 * backlog of n rows (logistic model, 30 features), timed like bench scenario 4; prints rows/s,
 * each side's batches and phases (relay: claim / produce+ack / count+commit; worker: decode /
 * score / write-back+commit) and CPU time per 1000 rows. --notify also drains the same backlog
 * with a notify worker, for the ratio. latency: scenario 5's 1k rows/s through Kafka (5 s).
 * split: the relay alone on the backlog, then the worker alone on the topic (each side's own rate).
 * warm: processes that have drained a warm-up backlog, on n rows inserted at once, notify vs Kafka.
 * --set passes settings to both sides (e.g. --set PGSCORE_BATCH_SIZE=2000); --cpu-prof writes V8
 * profiles of both sides to /tmp/pgscore-kafka-prof; --jfr records the broker to
 * /tmp/pgscore-kafka-broker.jfr.
 */
import { execFileSync, fork, type ChildProcess } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createLogger } from '../../src/log.js';
import { ensureKafkaJars, startKafkaBroker } from '../../test/helpers/kafka-broker.js';
import { createFeatureTable, deploy, deploymentId, freshDatabase, insertSelectSql, queueSize, startServer, type BenchDatabase } from '../lib/db.js';
import { drainNotify, queueRows } from '../lib/drain.js';
import { measureLatency } from '../lib/latency.js';
import { sleep, waitUntil } from '../lib/stats.js';
import { WORKER_DEFAULTS } from '../lib/worker.js';
import { Worker } from '../../src/worker/worker.js';

const args = process.argv.slice(2);
const value = (flag: string, fallback: string) => (args.includes(flag) ? args[args.indexOf(flag) + 1]! : fallback);
const n = Number(value('--n', '30000'));
const reps = Number(value('--reps', '1'));
const settings = Object.fromEntries(args.flatMap((a, i) => (args[i - 1] === '--set' ? [a.split('=') as [string, string]] : [])));
const experiments = args.filter((a, i) => !a.startsWith('--') && !['--n', '--reps', '--set'].includes(args[i - 1] ?? ''));
const want = (name: string) => (experiments.length === 0 && !['split', 'warm'].includes(name)) || experiments.includes(name);
const say = (text: string) => process.stdout.write(`${text}\n`);
const ROLE = fileURLToPath(new URL('./kafka-role.ts', import.meta.url));

interface Report { timeline: string[]; role: string; batches: number; rows: number; claimMs: number; scoreMs: number; writeMs: number; ms: number; failures: number; cpuMs: number }

interface Side {
  child: ChildProcess;
  ready: Promise<void>;
  ask(message: 'mark' | 'report'): Promise<Report | undefined>;
  stop(): Promise<void>;
}

function startSide(role: 'relay' | 'worker', env: Record<string, string>): Side {
  const execArgv = ['--import', 'tsx', ...(args.includes('--cpu-prof') ? ['--cpu-prof', '--cpu-prof-dir=/tmp/pgscore-kafka-prof'] : [])];
  const child = fork(ROLE, [role], { env: { ...process.env, ...env, ...settings }, execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const ready = new Promise<void>((resolve, reject) => {
    child.once('message', () => resolve());
    child.once('exit', (code) => reject(new Error(`${role} exited with ${code}`)));
  });
  return {
    child,
    ready,
    async ask(message) {
      const answer = message === 'report' ? new Promise<Report>((resolve) => child.once('message', (m) => resolve(m as Report))) : undefined;
      child.send(message);
      return answer;
    },
    async stop() {
      const gone = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.send('stop');
      await gone;
    },
  };
}

function describeSide(r: Report, phases: [string, string, string]): string {
  const per = (ms: number) => (r.batches ? (ms / r.batches).toFixed(1) : '–');
  return `${r.role}: ${r.batches} batches of ${r.batches ? Math.round(r.rows / r.batches) : 0} rows; per batch ${per(r.ms)} ms = ` +
    `${phases[0]} ${per(r.claimMs)} + ${phases[1]} ${per(r.scoreMs)} + ${phases[2]} ${per(r.writeMs)} ms; ` +
    `CPU ${(r.cpuMs / (r.rows / 1000 || 1)).toFixed(1)} ms per 1000 rows${r.failures ? `; ${r.failures} failures` : ''}`;
}

/** CPU ms so far of the machine (busy) and of the processes whose command line matches each pattern. */
async function cpuNow(patterns: Record<string, (cmd: string, ppid: string) => boolean>): Promise<Record<string, number>> {
  const tick = 10; // USER_HZ 100
  const stat = (await readFile('/proc/stat', 'utf8')).split('\n')[0]!.split(/\s+/).slice(1).map(Number);
  const out: Record<string, number> = { machine: (stat[0]! + stat[1]! + stat[2]! + stat[5]! + stat[6]!) * tick };
  for (const name of Object.keys(patterns)) out[name] = 0;
  for (const pid of await readdir('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      const cmd = (await readFile(`/proc/${pid}/cmdline`, 'utf8')).replaceAll('\0', ' ');
      const fields = (await readFile(`/proc/${pid}/stat`, 'utf8')).split(') ')[1]!.split(' ');
      const name = Object.keys(patterns).find((n) => patterns[n]!(cmd, fields[1]!) || (n === 'postgres' && patterns[n]!(cmd, pid)));
      if (!name) continue;
      out[name]! += (Number(fields[11]) + Number(fields[12])) * tick;
    } catch {
      // gone
    }
  }
  return out;
}
let CPU_PATTERNS: Record<string, (cmd: string, ppid: string) => boolean> = {};

/** CPU ms so far of each thread of a process, by thread name (digits folded). */
async function threadCpu(pid: number): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const tid of await readdir(`/proc/${pid}/task`).catch(() => [] as string[])) {
    try {
      const name = (await readFile(`/proc/${pid}/task/${tid}/comm`, 'utf8')).trim().replace(/\d+/g, 'N');
      const fields = (await readFile(`/proc/${pid}/task/${tid}/stat`, 'utf8')).split(') ')[1]!.split(' ');
      out.set(name, (out.get(name) ?? 0) + (Number(fields[11]) + Number(fields[12])) * 10);
    } catch {
      // gone
    }
  }
  return out;
}
let brokerPid: number | undefined;

function describeCpu(before: Record<string, number>, after: Record<string, number>, rows: number): string {
  return Object.keys(after).map((k) => `${k} ${((after[k]! - before[k]!) / (rows / 1000)).toFixed(1)}`).join(', ') + ' ms CPU per 1000 rows';
}

async function kafkaDrain(db: BenchDatabase, brokers: string[], tag: string): Promise<number> {
  const env = { DATABASE_URL: db.url, KAFKA_BROKERS: brokers.join(','), PGSCORE_KAFKA_TOPIC: `prof.${tag}`, PGSCORE_KAFKA_GROUP: `prof-${tag}` };
  const id = await deploymentId(db, 't');
  await db.query('DELETE FROM ml._kafka_counts');
  const worker = startSide('worker', env);
  await worker.ready;
  await queueRows(db, 't', n);
  await db.query('CHECKPOINT');
  const relay = startSide('relay', env);
  try {
    await relay.ready;
    await worker.ask('mark');
    await relay.ask('mark');
    const cpuBefore = await cpuNow(CPU_PATTERNS);
    const threadsBefore = args.includes('--threads') && brokerPid ? await threadCpu(brokerPid) : undefined;
    const started = performance.now();
    await waitUntil(async () => {
      const rows = await db.query<{ consumed: string }>('SELECT consumed FROM ml._kafka_counts WHERE deployment_id = $1', [id]);
      return Number(rows[0]?.consumed ?? 0) >= n;
    }, 'the Kafka worker to consume the backlog', 10 * 60_000, 25);
    const rate = n / ((performance.now() - started) / 1000);
    const cpuAfter = await cpuNow(CPU_PATTERNS);
    const relayReport = (await relay.ask('report'))!;
    const workerReport = (await worker.ask('report'))!;
    say(`  kafka: ${Math.round(rate)} rows/s`);
    say(`    ${describeSide(relayReport, ['claim', 'produce+ack', 'commit'])}`);
    say(`    ${describeSide(workerReport, ['decode', 'score', 'write+commit'])}`);
    say(`    ${describeCpu(cpuBefore, cpuAfter, n)}`);
    if (threadsBefore) {
      const after = await threadCpu(brokerPid!);
      const used = [...after].map(([name, ms]) => [name, ms - (threadsBefore.get(name) ?? 0)] as const).filter(([, ms]) => ms > 0).sort((a, b) => b[1] - a[1]);
      say(`    broker threads (ms): ${used.slice(0, 12).map(([name, ms]) => `${name} ${ms}`).join(', ')}`);
    }
    if (args.includes('--timeline')) {
      for (const r of [relayReport, workerReport]) say(`    ${r.role} timeline: ${r.timeline.join(' ')}`);
    }
    const unscored = await db.query<{ n: string }>('SELECT count(*) AS n FROM t WHERE p1 IS NULL');
    if (Number(unscored[0]!.n) !== 0) throw new Error(`${unscored[0]!.n} rows unscored after the Kafka drain`);
    return rate;
  } finally {
    await relay.stop();
    await worker.stop();
  }
}

/** The relay alone on the backlog, then the worker alone on what it produced: each side's own rate and costs. */
async function splitDrain(db: BenchDatabase, brokers: string[], tag: string): Promise<void> {
  const env = { DATABASE_URL: db.url, KAFKA_BROKERS: brokers.join(','), PGSCORE_KAFKA_TOPIC: `prof.${tag}`, PGSCORE_KAFKA_GROUP: `prof-${tag}` };
  const id = await deploymentId(db, 't');
  await db.query('DELETE FROM ml._kafka_counts');
  await queueRows(db, 't', n);
  await db.query('CHECKPOINT');
  const count = async (column: 'relayed' | 'consumed') =>
    Number((await db.query<{ n: string }>(`SELECT ${column} AS n FROM ml._kafka_counts WHERE deployment_id = $1`, [id]))[0]?.n ?? 0);
  for (const role of ['relay', 'worker'] as const) {
    const side = startSide(role, env);
    try {
      await side.ready;
      await side.ask('mark');
      const before = await cpuNow(CPU_PATTERNS);
      const started = performance.now();
      await waitUntil(async () => (await count(role === 'relay' ? 'relayed' : 'consumed')) >= n, `the ${role}`, 10 * 60_000, 25);
      const rate = n / ((performance.now() - started) / 1000);
      const after = await cpuNow(CPU_PATTERNS);
      const report = (await side.ask('report'))!;
      say(`  ${role} alone: ${Math.round(rate)} rows/s; ${describeSide(report, role === 'relay' ? ['claim', 'produce+ack', 'commit'] : ['decode', 'score', 'write+commit'])}`);
      say(`    ${describeCpu(before, after, n)}`);
    } finally {
      await side.stop();
    }
  }
}

/**
 * Warm processes: a notify worker, then a relay and a Kafka worker, each first drains a warm-up
 * backlog; then n rows are inserted in one statement and timed from its commit until every one
 * is scored (steady state, without the start-up of fresh processes that scenario 4 includes).
 */
async function warmDrain(db: BenchDatabase, brokers: string[], tag: string): Promise<void> {
  const scored = async () => Number((await db.query<{ n: string }>('SELECT count(*) AS n FROM t WHERE p1 IS NOT NULL'))[0]!.n);
  const timeBacklog = async (): Promise<number> => {
    await db.query('TRUNCATE t');
    await db.query(insertSelectSql('t', 10_000));
    await waitUntil(async () => (await scored()) >= 10_000, 'the warm-up', 10 * 60_000, 25);
    await db.query(insertSelectSql('t', n));
    const started = performance.now();
    await waitUntil(async () => (await scored()) >= 10_000 + n, 'the backlog', 10 * 60_000, 10);
    return n / ((performance.now() - started) / 1000);
  };
  const worker = new Worker(db.url, WORKER_DEFAULTS, createLogger('silent'));
  await worker.start();
  const notify = await timeBacklog().finally(() => worker.stop());
  const env = { DATABASE_URL: db.url, KAFKA_BROKERS: brokers.join(','), PGSCORE_KAFKA_TOPIC: `prof.${tag}`, PGSCORE_KAFKA_GROUP: `prof-${tag}` };
  const sides = [startSide('worker', env), startSide('relay', env)];
  try {
    await Promise.all(sides.map((side) => side.ready));
    const kafka = await timeBacklog();
    say(`  warm: notify ${Math.round(notify)} rows/s, kafka ${Math.round(kafka)} rows/s, kafka ÷ notify ${(kafka / notify).toFixed(2)}`);
  } finally {
    for (const side of sides.reverse()) await side.stop();
  }
}

const server = await startServer();
await ensureKafkaJars();
const broker = await startKafkaBroker();
const db = await freshDatabase(server, 'kafka_prof');
brokerPid = broker.pid;
{
  // This run's broker (by its temp dir) and Postgres (its postmaster, by port, and the postmaster's children).
  const brokerDir = path.dirname(broker.dataDir);
  const port = new URL(db.url).port;
  let postmaster = '';
  for (const pid of await readdir('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    const cmd = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    if (cmd.includes('bin/postgres') && cmd.includes(`-p\0${port}\0`)) postmaster = pid;
  }
  CPU_PATTERNS = { broker: (cmd) => cmd.includes(brokerDir), postgres: (_cmd, ppid) => ppid === postmaster };
}
try {
  await createFeatureTable(db, 't');
  await deploy(db, 't', 'logreg');
  // --jfr: a Java Flight Recording of the broker over the experiments (jcmd; read it with `jfr print`).
  if (args.includes('--jfr') && broker.pid) {
    execFileSync('jcmd', [String(broker.pid), 'JFR.start', 'name=prof', process.env.JFC ? `settings=${process.env.JFC}` : 'settings=profile', 'filename=/tmp/pgscore-kafka-broker.jfr']);
  }
  if (want('drain')) {
    say(`== drain of ${n} queued rows, relay + 1 Kafka worker${args.includes('--notify') ? ' vs notify' : ''} ${JSON.stringify(settings)} ==`);
    for (let rep = 0; rep < reps; rep++) {
      let notify: number | undefined;
      if (args.includes('--notify')) {
        await db.query('TRUNCATE t');
        await queueRows(db, 't', n);
        await db.query('CHECKPOINT');
        const before = { ...(await cpuNow(CPU_PATTERNS)), 'notify worker': process.cpuUsage().user / 1000 + process.cpuUsage().system / 1000 };
        notify = (await drainNotify(db, 't', n, createLogger('silent'))).rowsPerSec;
        const after = { ...(await cpuNow(CPU_PATTERNS)), 'notify worker': process.cpuUsage().user / 1000 + process.cpuUsage().system / 1000 };
        say(`  notify: ${Math.round(notify)} rows/s; ${describeCpu(before, after, n)}`);
      }
      await db.query('TRUNCATE t');
      const kafka = await kafkaDrain(db, broker.brokers, `d${rep}-${process.pid}`);
      if (notify) say(`  kafka ÷ notify: ${(kafka / notify).toFixed(2)}`);
    }
  }
  if (want('warm')) {
    say(`== warm processes on ${n} rows inserted at once ${JSON.stringify(settings)} ==`);
    for (let rep = 0; rep < reps; rep++) await warmDrain(db, broker.brokers, `w${rep}-${process.pid}`);
  }
  if (want('split')) {
    say(`== the relay alone, then one Kafka worker alone, on ${n} queued rows ${JSON.stringify(settings)} ==`);
    for (let rep = 0; rep < reps; rep++) {
      await db.query('TRUNCATE t');
      await splitDrain(db, broker.brokers, `s${rep}-${process.pid}`);
    }
  }
  if (want('latency')) {
    say(`== latency at 1k rows/s through Kafka ${JSON.stringify(settings)} ==`);
    for (let rep = 0; rep < reps; rep++) {
      await db.query('TRUNCATE t');
      const tag = `l${rep}-${process.pid}`;
      const env = { DATABASE_URL: db.url, KAFKA_BROKERS: broker.brokers.join(','), PGSCORE_KAFKA_TOPIC: `prof.${tag}`, PGSCORE_KAFKA_GROUP: `prof-${tag}` };
      const worker = startSide('worker', env);
      const relay = startSide('relay', env);
      try {
        await Promise.all([worker.ready, relay.ready]);
        await sleep(500);
        await worker.ask('mark');
        await relay.ask('mark');
        const run = await measureLatency(db.url, 't', { rate: 1000, seconds: 5, windows: 5, warmupSeconds: 0.5, pollEveryMs: 1 });
        const o = run.overall;
        say(`  kafka: p50 ${o.p50.toFixed(1)} / p95 ${o.p95.toFixed(1)} / p99 ${o.p99.toFixed(1)} / max ${o.max.toFixed(1)} ms (windows p99 ${run.windows.map((w) => w.p99.toFixed(0)).join(', ')})`);
        say(`    ${describeSide((await relay.ask('report'))!, ['claim', 'produce+ack', 'commit'])}`);
        say(`    ${describeSide((await worker.ask('report'))!, ['decode', 'score', 'write+commit'])}`);
        await waitUntil(async () => (await queueSize(db, 't')) === 0, 'queue to drain', 60_000);
      } finally {
        await relay.stop();
        await worker.stop();
      }
    }
  }
  if (args.includes('--jfr') && broker.pid) execFileSync('jcmd', [String(broker.pid), 'JFR.stop', 'name=prof']);
} finally {
  await db.close();
  await broker.close();
  await server.stop();
}
