import os from 'node:os';
import { drainWithChildren, type DrainSetup, type ProcessDrain } from '../lib/child-drain.js';
import { pick, type Scenario } from '../lib/context.js';
import { findPostmaster } from '../lib/cpu.js';
import { createFeatureTable, deploy, freshDatabase, MODELS } from '../lib/db.js';
import { fmt, metric, type Metric, type ModelKey } from '../lib/result.js';
import { summarize } from '../lib/stats.js';

const POSTGRES = 'Postgres';
const BROKER = 'Kafka broker';
const RELAY = 'relay';
const PROJECTED_WORKERS = [1, 2, 4, 8, 16];
const SCENARIO = '12 scale-out';

type Setup = 'notify' | 'kafka1' | 'kafka2';
const SETUP_NAMES: Record<Setup, string> = { notify: 'notify worker', kafka1: 'relay + 1 Kafka worker', kafka2: 'relay + 2 Kafka workers' };

const median = (values: readonly number[]) => summarize(values).median;
const measuredCpu = (run: ProcessDrain) => [...run.cpu.values()].reduce<number>((sum, v) => sum + (v ?? 0), 0);

/** CPU-seconds per million rows of one process over the runs (undefined values: not measured). */
function perMillion(runs: readonly ProcessDrain[], process: string, n: number): number[] {
  return runs.flatMap((r) => {
    const cpu = r.cpu.get(process);
    return cpu === undefined ? [] : [(cpu / n) * 1e6];
  });
}

interface Ceiling {
  readonly resource: string;
  readonly rowsPerSec: number;
}

/**
 * N Kafka workers, each on its own machine, reach N × the measured one-worker rate, until the
 * first shared resource runs out: Postgres or the broker on their own `cores`-core machines, or
 * the relay (one process, one core).
 */
function project(workerRate: number, ceilings: readonly Ceiling[], workers: number): Ceiling {
  const candidates: Ceiling[] = [{ resource: `Kafka workers (${workers} × ${fmt(workerRate)} rows/s)`, rowsPerSec: workers * workerRate }, ...ceilings];
  return candidates.reduce((low, c) => (c.rowsPerSec < low.rowsPerSec ? c : low));
}

/**
 * What the measurement says about the projection's premise (more workers, more rows/s): whether
 * two workers beat one here, whether the cores were full, and whether the relay paced the drain.
 */
function readProjection(model: ModelKey, runs: Record<Setup, ProcessDrain[]>, pairs: readonly number[]): string {
  const cores = os.cpus().length;
  const kafkaRuns = [...runs.kafka1, ...runs.kafka2];
  const ours = median(kafkaRuns.map((r) => measuredCpu(r) / r.seconds));
  const machine = median(kafkaRuns.map((r) => r.machine.busyCores));
  const relayShare = median(kafkaRuns.flatMap((r) => (r.relayedSeconds === undefined ? [] : [r.relayedSeconds / r.seconds])));
  const parts = [`Reading the projection (${model}): 2 Kafka workers ran at ${fmt(median(pairs))}× the rate of one on this machine.`];
  parts.push(
    machine < 0.8 * cores
      ? `During the Kafka drains the measured processes kept ${fmt(ours)} of ${cores} cores busy and the whole machine ${fmt(machine)}: the path was not short of CPU here but waiting (round trips between relay, broker, workers and Postgres), so the CPU ceilings are upper bounds and the N × one-worker line holds only if that waiting does not grow with N.`
      : `During the Kafka drains the machine's ${cores} cores were ${fmt(machine)} busy (the measured processes ${fmt(ours)}): CPU was short here, so one worker on its own machine would likely run faster than measured, and the N × one-worker line is conservative.`,
  );
  if (Number.isFinite(relayShare)) {
    parts.push(
      relayShare > 0.9
        ? `The relay had produced the last row only at ${Math.round(relayShare * 100)} % of the drain: the relay paced it, and a relay that waits rather than computes is a ceiling the CPU figures do not show.`
        : `The relay had produced every row at ${Math.round(relayShare * 100)} % of the drain: the workers, not the relay, set the pace.`,
    );
  }
  return parts.join(' ');
}

export const scaleOut: Scenario = {
  id: '12',
  title: 'Scale-out: CPU per million rows and a projection',
  async run(ctx, out) {
    const n = pick(ctx, 30_000, 300_000);
    const reps = pick(ctx, 1, 2);
    const models = pick<readonly ModelKey[]>(ctx, ['logreg'], MODELS);
    const cores = os.cpus().length;
    out.notes.push(
      `Method: ${n.toLocaleString('en-US')} rows per drain, ${reps} repetition(s) of notify worker, relay + 1 and relay + 2 Kafka workers in turn (each a \`pgscore\` child process with default settings; Kafka: fresh topic, default 12 partitions, the workers' group settled before the relay starts). Every process is started and idle before the rows exist; the rows are INSERTed in one open transaction and CHECKPOINTed, CPU is sampled, the transaction commits, and the clock runs until the write-back of the last row committed (ml._batches / ml._kafka_counts, polled every 25 ms). CPU-seconds are utime+stime from /proc/<pid>/stat, before and after: each pgscore process, the broker's JVM, and Postgres = the postmaster and every process under it (backends, WAL writer, checkpointer, autovacuum), with exited backends counted through the postmaster's cutime+cstime. ${cores} cores on this machine, shared by all of them (and whatever else ran: see the load average).`,
      `Projection: N Kafka workers, each on its own machine, and one relay, reach N × the measured 1-worker rate (measured with relay, broker and Postgres on the same cores; the reading below says whether that was the worker's own limit) until a shared resource runs out: Postgres on its own ${cores}-core machine at ${cores} ÷ (its CPU-s per row), the broker likewise, the relay (one process) at 1 ÷ (its CPU-s per row). Per-row costs are medians over the 1- and 2-worker Kafka runs. Disk, network and lock contention are not in it: a ceiling from CPU only.`,
    );
    const postmaster = await findPostmaster(ctx.server.adminUrl);
    if (!postmaster.ok) out.notes.push(`Postgres not measured: ${postmaster.reason}.`);
    const kafka = await ctx.kafka();
    if (!kafka.ok) out.notes.push(`Kafka runs skipped: ${kafka.reason}; only the notify worker is measured.`);
    const db = await freshDatabase(ctx.server, 'scaleout');
    try {
      for (const model of models) {
        const table = `t_${model}`;
        await createFeatureTable(db, table);
        await deploy(db, table, model);
        const runs: Record<Setup, ProcessDrain[]> = { notify: [], kafka1: [], kafka2: [] };
        for (let rep = 0; rep < reps; rep++) {
          for (const setup of Object.keys(runs) as Setup[]) {
            if (setup !== 'notify' && !kafka.ok) continue;
            const others = new Map<string, number>();
            if (postmaster.ok) others.set(POSTGRES, postmaster.pid);
            const brokerPid = kafka.ok ? kafka.pid() : undefined;
            if (setup !== 'notify' && brokerPid !== undefined) others.set(BROKER, brokerPid);
            const how: DrainSetup = setup === 'notify' || !kafka.ok
              ? { transport: 'notify' }
              : { transport: 'kafka', brokers: kafka.brokers, workers: setup === 'kafka1' ? 1 : 2, tag: `scale-${model}-${setup}-${rep}-${process.pid}` };
            await db.query(`TRUNCATE ${table}`);
            const run = await drainWithChildren(db, table, n, how, others);
            runs[setup].push(run);
            ctx.progress(`scale-out ${model} ${SETUP_NAMES[setup]} rep ${rep + 1}/${reps}: ${Math.round(run.rowsPerSec)} rows/s, ${(measuredCpu(run) / run.seconds).toFixed(2)} cores busy (machine ${run.machine.busyCores.toFixed(2)})`);
          }
        }
        report(model, runs);
      }
    } finally {
      await db.close();
    }

    function report(model: ModelKey, runs: Record<Setup, ProcessDrain[]>): void {
      const push = (m: Metric) => out.metrics.push(m);
      for (const setup of Object.keys(runs) as Setup[]) {
        const list = runs[setup];
        if (list.length === 0) continue;
        push(metric(SCENARIO, model, `${SETUP_NAMES[setup]}, rows/s`, 'rows/s', list.map((r) => r.rowsPerSec)));
        for (const name of list[0]!.cpu.keys()) {
          push(metric(SCENARIO, model, `${SETUP_NAMES[setup]}: CPU-s per million rows, ${name}`, 'CPU-s/M rows', perMillion(list, name, n)));
        }
        push(metric(SCENARIO, model, `${SETUP_NAMES[setup]}: CPU-s per million rows, all measured processes`, 'CPU-s/M rows', list.map((r) => (measuredCpu(r) / n) * 1e6)));
        push(metric(SCENARIO, model, `${SETUP_NAMES[setup]}: cores busy, measured processes`, 'cores', list.map((r) => measuredCpu(r) / r.seconds)));
        push(metric(SCENARIO, model, `${SETUP_NAMES[setup]}: cores busy, whole machine (any process)`, 'cores', list.map((r) => r.machine.busyCores)));
        const relayed = list.flatMap((r) => (r.relayedSeconds === undefined ? [] : [n / r.relayedSeconds]));
        if (relayed.length > 0) push(metric(SCENARIO, model, `${SETUP_NAMES[setup]}: relay's own rate (until every row was produced)`, 'rows/s', relayed));
      }
      const kafkaRuns = [...runs.kafka1, ...runs.kafka2];
      if (runs.kafka1.length === 0 || runs.kafka2.length === 0) return;
      const pairs = runs.kafka2.map((r, i) => r.rowsPerSec / runs.kafka1[i]!.rowsPerSec);
      push(metric(SCENARIO, model, '2 ÷ 1 Kafka workers on this machine', 'ratio', pairs));

      const perRow = (name: string) => median(perMillion(kafkaRuns, name, n)) / 1e6;
      const ceilings: Ceiling[] = [];
      const unmeasured: string[] = [];
      for (const [name, label, ceilingCores] of [[POSTGRES, `Postgres (own ${cores}-core machine)`, cores], [BROKER, `Kafka broker (own ${cores}-core machine)`, cores], [RELAY, 'relay (one process, 1 core)', 1]] as const) {
        const cost = perRow(name);
        if (!Number.isFinite(cost) || cost <= 0) {
          unmeasured.push(name);
          continue;
        }
        ceilings.push({ resource: label, rowsPerSec: ceilingCores / cost });
        push(metric(SCENARIO, model, `ceiling of ${label}`, 'rows/s', [ceilingCores / cost]));
      }
      const workerRate = median(runs.kafka1.map((r) => r.rowsPerSec));
      const measured2 = median(runs.kafka2.map((r) => r.rowsPerSec));
      const caveat = unmeasured.length ? ` (${unmeasured.join(', ')} not measured: no ceiling for ${unmeasured.length > 1 ? 'them' : 'it'})` : '';
      const rows: string[] = [];
      for (const workers of PROJECTED_WORKERS) {
        const limit = project(workerRate, ceilings, workers);
        const note = `limited by ${limit.resource}${caveat}; measured here: 1 worker ${fmt(workerRate)}, 2 workers ${fmt(measured2)} rows/s`;
        push({ ...metric(SCENARIO, model, `projected rows/s, ${workers} Kafka worker${workers > 1 ? 's' : ''}`, 'rows/s', [limit.rowsPerSec], undefined, note), ...(workers === 16 ? { goal: 'scaleOut' } : {}) });
        const measuredHere = workers === 1 ? fmt(workerRate) : workers === 2 ? fmt(measured2) : '';
        rows.push(`  | ${workers} | ${fmt(limit.rowsPerSec)} | ${limit.resource} | ${measuredHere} |`);
      }
      out.notes.push(
        [
          `Projection for ${model}${caveat} (rows/s):`,
          '',
          '  | Kafka workers | projected | first to run out | measured on this machine |',
          '  |---:|---:|---|---:|',
          ...rows,
          '',
          `  Ceilings: ${ceilings.map((c) => `${c.resource} ${fmt(c.rowsPerSec)}`).join('; ')}.`,
        ].join('\n'),
      );
      out.notes.push(readProjection(model, runs, pairs));
    }
  },
};
