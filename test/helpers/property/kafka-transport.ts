import { appendFileSync } from 'node:fs';
import { Kafka, logLevel } from 'kafkajs';
import { pino } from 'pino';
import { loadConfig } from '../../../src/config.js';
import type { BatchFailure } from '../../../src/worker/loop.js';
import { KafkaWorker } from '../../../src/transport/kafka.js';
import { exited, signalGroup, startPgscore, type RunningPgscore } from '../cli.js';
import type { TestDatabase } from '../db.js';
import type { KafkaBroker } from '../kafka-broker.js';
import type { KafkaProxy } from '../kafka-proxy.js';
import type { TransportFault } from './spec.js';
import { CaseFailure, type Transport } from './suite.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** How long the relay may take to give a send up once the broker is out of reach (kafkajs's retries). */
const GIVE_UP_MS = 120_000;
/** A drop-ack that has dropped nothing by the end of the case's statements is taken back this long after. */
const DROP_WAIT_MS = 5_000;
const RELAY_GAVE_UP = 'its rows stay queued';

export interface KafkaTransport extends Transport {
  /** What the faults did, for the summary line: a fault that never hit would show here. */
  readonly counts: Record<TransportFault['kind'] | 'dropMissed', number>;
  /** The in-process worker's failed chunks, by kind and reason. */
  readonly workerFailures: Record<string, number>;
}

/**
 * The Kafka transport of generated-kafka.test.ts: `pgscore relay` as a child process (so that
 * 'relay-kill' is a real kill -9) and a KafkaWorker in process, on a broker behind a proxy
 * (kafka-proxy.ts, for 'drop-ack').
 */
export async function kafkaTransport(db: TestDatabase, broker: KafkaBroker, proxy: KafkaProxy): Promise<KafkaTransport> {
  const env = {
    DATABASE_URL: db.workerUrl,
    KAFKA_BROKERS: broker.brokers.join(','),
    PGSCORE_KAFKA_TOPIC: 'pgscore.generated',
    PGSCORE_KAFKA_GROUP: 'pgscore-generated',
    PGSCORE_KAFKA_PARTITIONS: '4',
    PGSCORE_POLL_INTERVAL_MS: '200',
    PGSCORE_LOG_LEVEL: 'info',
    PGSCORE_METRICS_PORT: '0',
  };
  const config = loadConfig(env);
  const kafka = new Kafka({ clientId: 'generated-suite', brokers: broker.brokers, logLevel: logLevel.NOTHING });
  const counts: KafkaTransport['counts'] = { 'relay-kill': 0, 'broker-restart': 0, 'broker-kill': 0, 'drop-ack': 0, dropMissed: 0 };
  /**
   * The in-process worker's kafkajs consumer: when it crashed last, and when kafkajs last said it
   * restarts it. A crash with no restart after it (a non-retriable error) leaves a worker that
   * consumes nothing (K1, fixed 2026-12-07: the worker restarts it).
   */
  const consumer = { crashedAt: 0, crash: '', restartingAt: 0 };
  // PGSCORE_PROPERTY_WORKER_LOG=<file> keeps the in-process worker's whole log (info and up).
  const keep = process.env.PGSCORE_PROPERTY_WORKER_LOG;
  const workerLog = pino({ level: keep ? 'debug' : 'warn' }, {
    write(line: string) {
      if (keep) appendFileSync(keep, line);
      const msg = (JSON.parse(line) as { msg?: string }).msg ?? '';
      if (msg.startsWith('Crash: ')) Object.assign(consumer, { crashedAt: Date.now(), crash: msg });
      // kafkajs restarts a consumer that crashed on a retriable error; the worker, one that
      // crashed on any other (src/transport/kafka.ts).
      else if (msg.startsWith('Restarting the consumer') || msg.startsWith('Kafka consumer stopped')) consumer.restartingAt = Date.now();
    },
  });
  const workerFailures: Record<string, number> = {};
  /** Relays killed on purpose: their exit is no finding. */
  const killed = new WeakSet<RunningPgscore>();

  async function startRelay(): Promise<RunningPgscore> {
    const child = startPgscore(['relay'], env);
    const deadline = Date.now() + 60_000;
    while (!child.output().includes('relay ready')) {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`pgscore relay exited before it was ready:\n${child.output().slice(-3000)}`);
      if (Date.now() > deadline) throw new Error(`pgscore relay not ready after 60 s:\n${child.output().slice(-3000)}`);
      await sleep(50);
    }
    return child;
  }

  async function startWorker(): Promise<KafkaWorker> {
    Object.assign(consumer, { crashedAt: 0, crash: '', restartingAt: 0 });
    const next = new KafkaWorker(db.workerUrl, config, workerLog);
    next.on('failure', (failure: BatchFailure) => {
      const key = `${failure.kind}: ${failure.reason.slice(0, 160)}`;
      workerFailures[key] = (workerFailures[key] ?? 0) + 1;
    });
    await next.start();
    return next;
  }

  async function stopRelay(signal: 'SIGTERM' | 'SIGKILL'): Promise<void> {
    killed.add(relay);
    signalGroup(relay, signal);
    await exited(relay);
  }

  /**
   * A relay that exited without being told to is a finding (its output says why); a new one is
   * started first, so that the next cases (and the shrinker's) run with a relay.
   */
  async function relayAlive(): Promise<void> {
    if ((relay.exitCode !== null || relay.signalCode !== null) && !killed.has(relay)) {
      const output = relay.output().slice(-2000);
      const how = relay.signalCode ?? `code ${relay.exitCode}`;
      killed.add(relay);
      relay = await startRelay();
      throw new CaseFailure(`pgscore relay exited by itself (${how}):\n${output}`);
    }
  }

  /**
   * The broker appended the batch and the relay never learns it; the broker stays out of reach
   * until the relay has given the send up (its rows stay queued), as in the issue.
   */
  async function afterDrop(): Promise<void> {
    const mark = relay.output().length;
    const deadline = Date.now() + GIVE_UP_MS;
    try {
      while (!relay.output().slice(mark).includes(RELAY_GAVE_UP)) {
        await relayAlive();
        if (Date.now() > deadline) throw new CaseFailure(`drop-ack: the relay did not give its send up within ${GIVE_UP_MS} ms`);
        await sleep(100);
      }
    } finally {
      await proxy.accept();
    }
  }
  let drop: { before: number; done: Promise<void> } | undefined;

  let relay = await startRelay();
  let worker = await startWorker();

  return {
    name: 'kafka',
    waitsInKafka: true,
    counts,
    workerFailures,
    async restart() {
      await relayAlive();
      await Promise.all([worker.stop(), stopRelay('SIGTERM')]);
      [relay, worker] = await Promise.all([startRelay(), startWorker()]);
    },
    async stop() {
      await Promise.all([worker.stop(), stopRelay('SIGTERM')]);
    },
    async watch() {
      // kafkajs logs the restart right after the crash (after a disconnect): 3 s is plenty.
      if (consumer.crashedAt <= consumer.restartingAt || Date.now() - consumer.crashedAt < 3_000) return;
      throw new CaseFailure(`K1: the Kafka worker's consumer crashed and nothing restarted it (${consumer.crash}): the worker consumes nothing from now on, silently`);
    },
    async settle() {
      try {
        if (!drop) return;
        const { before, done } = drop;
        drop = undefined;
        await Promise.race([done, sleep(DROP_WAIT_MS)]);
        if (proxy.dropped > before) {
          await done;
          return;
        }
        // No send after the fault (the case's later statements queued nothing): taken back.
        proxy.cancelDrop();
        counts.dropMissed += 1;
      } finally {
        await relayAlive();
      }
    },
    async describe(deploymentId) {
      const dead = relay.exitCode !== null || relay.signalCode !== null;
      // Where the group really is, against what pgscore recorded (ml.status.in_kafka's inputs).
      const admin = kafka.admin();
      let group = 'unknown';
      try {
        await admin.connect();
        const [committed] = await admin.fetchOffsets({ groupId: config.kafkaGroup, topics: [config.kafkaTopic] });
        const ends = await admin.fetchTopicOffsets(config.kafkaTopic);
        group = JSON.stringify({ committed: committed?.partitions, logEnd: ends.map((e) => ({ partition: e.partition, high: e.high })) });
      } catch (error) {
        group = `unknown (${(error as Error).message})`;
      } finally {
        await admin.disconnect().catch(() => undefined);
      }
      const recorded = await db.sql(`SELECT "partition", "offset" FROM ml._kafka_committed ORDER BY 1`);
      const messages = await db.sql(`SELECT "partition", "offset", rows FROM ml._kafka_messages WHERE deployment_id = $1 ORDER BY 1, 2`, [deploymentId]);
      return `group offsets in Kafka ${group}; recorded in ml._kafka_committed ${JSON.stringify(recorded)}; this deployment's messages ${JSON.stringify(messages)}; ` +
        `worker failures ${JSON.stringify(workerFailures)}; relay ${dead ? `exited (${relay.signalCode ?? relay.exitCode})` : 'running'}; its last output: ${relay.output().slice(-1500)}`;
    },
    async fault(fault) {
      await relayAlive();
      counts[fault.kind] += 1;
      switch (fault.kind) {
        case 'relay-kill':
          await sleep(fault.afterMs);
          await stopRelay('SIGKILL');
          relay = await startRelay();
          return;
        case 'broker-restart':
          await sleep(fault.afterMs);
          await broker.restart();
          return;
        case 'broker-kill':
          await sleep(fault.afterMs);
          await broker.kill();
          await broker.start();
          return;
        case 'drop-ack': {
          // Armed before the statement commits: the relay's next send (of this statement's rows,
          // or of a later one's) is dropped. It stays armed until settle(), before the drain.
          const before = proxy.dropped;
          drop = { before, done: proxy.dropNextProduceResponse().then(afterDrop) };
          drop.done.catch(() => undefined);
          return;
        }
      }
    },
  };
}
