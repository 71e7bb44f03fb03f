import { Kafka, logLevel } from 'kafkajs';
import pg from 'pg';
import { machineCpuSeconds, sampleCpu } from './cpu.js';
import { deploymentId, insertSelectSql, type BenchDatabase } from './db.js';
import { sleep, waitUntil } from './stats.js';
import { spawnPgscore, type Child } from './worker.js';

export type DrainSetup =
  | { readonly transport: 'notify' }
  | { readonly transport: 'kafka'; readonly brokers: readonly string[]; readonly workers: number; readonly tag: string };

export interface ProcessDrain {
  readonly rowsPerSec: number;
  readonly seconds: number;
  /** CPU-seconds each process (with its children) used during the drain; undefined when it could not be read. */
  readonly cpu: ReadonlyMap<string, number | undefined>;
  /** Cores the whole machine kept busy (and waiting for I/O) on average during the drain, ours or not. */
  readonly machine: { readonly busyCores: number; readonly iowaitCores: number };
  /** Kafka: when the relay had produced every row (ml._kafka_counts.relayed), seconds from COMMIT. */
  readonly relayedSeconds?: number;
}

/**
 * Drains n rows of `table` (deployed under the same name, queue empty) with pgscore child
 * processes: one `pgscore worker`, or `pgscore relay` + `workers` × `pgscore worker --transport
 * kafka` on a fresh topic (default 12 partitions). Every process is started and idle before the
 * rows exist; the rows are inserted in one open transaction, then CPU is sampled and the
 * transaction committed, so neither start-up nor the INSERT is in the figures: the clock runs
 * from COMMIT until the write-back of the last row committed. `others` are more processes to
 * sample by name (the postmaster, the broker).
 */
export async function drainWithChildren(db: BenchDatabase, table: string, n: number, setup: DrainSetup, others: ReadonlyMap<string, number>): Promise<ProcessDrain> {
  const id = await deploymentId(db, table);
  const children = new Map<string, Child>();
  const inserter = new pg.Client({ connectionString: db.url, application_name: 'bench inserter' });
  await inserter.connect();
  try {
    let done: () => Promise<boolean>;
    let relayedAt: number | undefined;
    if (setup.transport === 'notify') {
      children.set('worker', spawnPgscore(['worker'], { DATABASE_URL: db.url }, 'worker ready'));
      await children.get('worker')!.ready;
      const scored = async () => Number((await db.query<{ n: string | null }>('SELECT sum(scored) AS n FROM ml._batches WHERE deployment_id = $1', [id]))[0]?.n ?? 0);
      const before = await scored();
      done = async () => (await scored()) >= before + n;
    } else {
      const env = {
        DATABASE_URL: db.url,
        KAFKA_BROKERS: setup.brokers.join(','),
        PGSCORE_KAFKA_TOPIC: `bench.${setup.tag}`,
        PGSCORE_KAFKA_GROUP: `bench-${setup.tag}`,
      };
      await db.query('DELETE FROM ml._kafka_counts');
      for (let i = 1; i <= setup.workers; i++) children.set(`Kafka worker ${i}`, spawnPgscore(['worker', '--transport', 'kafka'], env, 'worker ready'));
      for (const child of children.values()) await child.ready;
      await groupStable(setup.brokers, env.PGSCORE_KAFKA_GROUP, setup.workers);
      children.set('relay', spawnPgscore(['relay'], env, 'relay ready'));
      await children.get('relay')!.ready;
      done = async () => {
        const counts = (await db.query<{ relayed: string; consumed: string }>('SELECT relayed, consumed FROM ml._kafka_counts WHERE deployment_id = $1', [id]))[0];
        if (relayedAt === undefined && Number(counts?.relayed ?? 0) >= n) relayedAt = performance.now();
        return Number(counts?.consumed ?? 0) >= n;
      };
    }
    const pids = new Map([...others, ...[...children].map(([name, child]) => [name, child.pid] as const)]);

    await inserter.query('BEGIN');
    for (let queued = 0; queued < n; queued += 100_000) await inserter.query(insertSelectSql(table, Math.min(100_000, n - queued)));
    // Written out now, so that no checkpoint of these rows falls into the drain.
    await db.query('CHECKPOINT');
    await sleep(200);
    const before = await sampleCpu(pids);
    const machineBefore = await machineCpuSeconds();
    await inserter.query('COMMIT');
    const started = performance.now();
    const finished = async () => {
      for (const [name, child] of children) {
        if (child.process.exitCode !== null) throw new Error(`${name} exited during the drain:\n${child.stderr().slice(-3000)}`);
      }
      return done();
    };
    await waitUntil(finished, `the ${setup.transport} drain of ${n} rows`, 20 * 60_000, 25);
    const seconds = (performance.now() - started) / 1000;
    const after = await sampleCpu(pids);
    const machineAfter = await machineCpuSeconds();

    const unscored = await db.query<{ n: string }>(`SELECT count(*) AS n FROM ${table} WHERE p1 IS NULL`);
    if (Number(unscored[0]!.n) !== 0) throw new Error(`${unscored[0]!.n} rows of ${table} unscored after the ${setup.transport} drain`);
    const cpu = new Map<string, number | undefined>();
    for (const [name, end] of after) {
      const start = before.get(name);
      cpu.set(name, end === undefined || start === undefined ? undefined : end - start);
    }
    return {
      rowsPerSec: n / seconds,
      seconds,
      cpu,
      machine: { busyCores: (machineAfter.busy - machineBefore.busy) / seconds, iowaitCores: (machineAfter.iowait - machineBefore.iowait) / seconds },
      ...(relayedAt === undefined ? {} : { relayedSeconds: (relayedAt - started) / 1000 }),
    };
  } finally {
    await inserter.end().catch(() => undefined);
    // Each finishes its batches in flight on SIGTERM; nothing is left to drain, so all at once.
    await Promise.all([...children.values()].map((child) => child.stop()));
  }
}

/** Until the consumer group has `members` members and no rebalance in progress, so that none happens mid-drain. */
async function groupStable(brokers: readonly string[], group: string, members: number): Promise<void> {
  const admin = new Kafka({ clientId: 'pgscore-bench', brokers: [...brokers], logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  try {
    await waitUntil(
      async () => {
        const { groups } = await admin.describeGroups([group]);
        return groups[0]?.state === 'Stable' && groups[0].members.length === members;
      },
      `consumer group ${group} to settle with ${members} members`,
      60_000,
      200,
    );
  } finally {
    await admin.disconnect();
  }
}
