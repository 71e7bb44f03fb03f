/**
 * One side of the Kafka path for bench/profile/kafka.ts, as its own process (forked with IPC):
 *   node --import tsx bench/profile/kafka-role.ts relay|worker
 * Settings from the environment (as `pgscore relay` / `pgscore worker --transport kafka` read
 * them). Sends 'ready'; 'mark' starts counting, 'report' answers with the sums of its batches'
 * phases and its CPU time since the mark, 'stop' stops it.
 */
import { loadConfig } from '../../src/config.js';
import { createLogger } from '../../src/log.js';
import type { BatchResult } from '../../src/pipeline/batch.js';
import { KafkaWorker } from '../../src/transport/kafka.js';
import { Relay } from '../../src/transport/relay.js';

const role = process.argv[2];
const config = loadConfig({ ...process.env, PGSCORE_ALLOW_SUPERUSER: 'true' });
const log = createLogger(process.env.PGSCORE_LOG_LEVEL === 'debug' ? 'debug' : 'warn');
const url = config.databaseUrl!;
const side = role === 'relay' ? new Relay(url, config, log) : new KafkaWorker(url, config, log);

const sums = { batches: 0, rows: 0, claimMs: 0, scoreMs: 0, writeMs: 0, ms: 0, failures: 0 };
let markedAt = performance.now();
/** [start, end] ms since the mark, and rows, of each batch. */
let timeline: string[] = [];
side.on('batch', (b: BatchResult) => {
  const end = performance.now() - markedAt;
  const p = b.phases;
  timeline.push(`${Math.round(end - b.ms)}+${p ? [p.claimMs, p.scoreMs, p.writeMs].map((x) => Math.round(x)).join('/') : Math.round(b.ms)}:${b.claimed}`);
  sums.batches++;
  sums.rows += b.claimed;
  sums.ms += b.ms;
  sums.claimMs += b.phases?.claimMs ?? 0;
  sums.scoreMs += b.phases?.scoreMs ?? 0;
  sums.writeMs += b.phases?.writeMs ?? 0;
});
side.on('failure', () => sums.failures++);

let cpuAtStart = process.cpuUsage();
process.on('message', (message: string) => {
  if (message === 'mark') {
    cpuAtStart = process.cpuUsage();
    markedAt = performance.now();
    timeline = [];
    for (const key of Object.keys(sums) as (keyof typeof sums)[]) sums[key] = 0;
  } else if (message === 'report') {
    const cpu = process.cpuUsage(cpuAtStart);
    process.send!({ role, ...sums, cpuMs: (cpu.user + cpu.system) / 1000, timeline });
  } else if (message === 'stop') {
    void side.stop().then(() => process.exit(0));
  }
});

await side.start();
process.send!('ready');
