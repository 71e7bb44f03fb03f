import { EventEmitter } from 'node:events';
import type { Message } from 'kafkajs';
import type pg from 'pg';
import { WalCapture } from '../capture/wal.js';
import type { Config } from '../config.js';
import { createPool } from '../db/pool.js';
import { recheckDeployment, RECORD_RELAYED } from '../db/statements.js';
import type { Logger } from '../log.js';
import { inWritebackTransaction, type BatchResult } from '../pipeline/batch.js';
import { claimBatch, ClaimSizer } from '../queue/claim.js';
import { claimIsolated } from '../queue/isolated-claim.js';
import { isRowFailure } from '../pipeline/row-failure.js';
import type { ClaimedRow } from '../queue/claimed-row.js';
import { checkWorkerRole } from '../worker/identity.js';
import { startupPatience } from '../db/patience.js';
import { listDeployments, RecheckCursor, type ActiveDeployment } from '../worker/deployments.js';
import { QueueLoop, type LoopEvents } from '../worker/loop.js';
import { createKafka, ensureTopic } from './kafka-client.js';
import { encodeRows, MAX_MESSAGE_BYTES, rowsIn } from './message.js';
import { ProduceQueue, type Produced } from './produce-queue.js';
import { RelayProducer } from './relay-producer.js';
import { partitionOf, rowKey } from './partition.js';

/** Keys per queue row of a bulk statement (sql/functions/030_generate.sql). */
const BULK_KEYS_PER_QUEUE_ROW = 100;

/**
 * `pgscore relay`: drains the queues like a notify worker, but instead of scoring it produces
 * the claimed rows, with their input values, to the Kafka topic (one message per partition a
 * batch's rows belong to, message.ts), and deletes the queue rows only after every broker in sync
 * has acknowledged them (acks=all, idempotent producer, retired after a failed send:
 * relay-producer.ts), in the same transaction that claimed them, which also records where the
 * messages were appended (ml.status.in_kafka). A crash between the acknowledgement and the
 * commit sends the rows again (duplicates); nothing is ever deleted unsent. Lanes (PGSCORE_CONCURRENCY) overlap one batch's claim with
 * another's produce; lanes that produce at the same time share a request (produce-queue.ts).
 */
export class Relay extends EventEmitter<LoopEvents> {
  readonly #config: Config;
  readonly #loop: QueueLoop;
  readonly #producer: RelayProducer;
  readonly #kafka;
  readonly #pool: pg.Pool;
  readonly #log: Logger;
  /** The topic's partition count: from its metadata at start, then from the producer's. */
  readonly #partitions = { count: 1 };

  constructor(connectionString: string, config: Config, log: Logger) {
    super();
    this.#config = config;
    this.#log = log;
    this.#kafka = createKafka(config, log);
    const partitions = this.#partitions;
    this.#producer = new RelayProducer(this.#kafka, config.kafkaTopic, {
      allowAutoTopicCreation: false,
      // Every message names its partition (relayMessages); the metadata the producer passes
      // keeps the count current when partitions are added.
      createPartitioner: () => ({ partitionMetadata, message }) => {
        if (partitionMetadata.length > 0) partitions.count = partitionMetadata.length;
        return message.partition ?? 0;
      },
    }, log);
    const pool = createPool(connectionString, { max: config.concurrency + 1, name: 'relay' });
    pool.on('error', (error) => log.warn({ err: error }, 'idle pooled connection lost'));
    const producer = this.#producer;
    const produce = new ProduceQueue((messages) => producer.send(messages), MAX_MESSAGE_BYTES);
    const sizer = new ClaimSizer(config.batchSize);
    const recheck = new RecheckCursor();
    const primed = new Set<number>();
    // Deployments that capture from the WAL: the relay queues their rows (a slot has one reader).
    const capture = new WalCapture(connectionString, pool, log);
    this.#pool = pool;
    this.#loop = new QueueLoop(connectionString, pool, config, log, {
      async load() {
        const deployments = await listDeployments(pool, log, recheck);
        // Until a claim has seen how many keys a deployment's queue rows hold, the sizer assumes
        // one per row and the first claim locks up to PGSCORE_BATCH_SIZE queue rows: a bulk-loaded
        // backlog (100 keys a row) whole, so the other lanes find nothing and leave the drain to
        // one lane. Assume the bulk chunk size instead; the first claim corrects it.
        for (const deployment of deployments) {
          if (!primed.has(deployment.id)) sizer.observe(deployment.id, BULK_KEYS_PER_QUEUE_ROW, 1);
          primed.add(deployment.id);
        }
        await capture.update(deployments);
        return deployments;
      },
      async handle(deployment) {
        try {
          return await relayBatch(pool, produce, config, deployment, sizer, partitions.count, false);
        } catch (error) {
          // A row's input expression failed the claim: claim again one step at a time, so that
          // the failing rows become dead letters and the others are relayed (claimIsolated).
          if (!isRowFailure(error)) throw error;
          return relayBatch(pool, produce, config, deployment, sizer, partitions.count, true);
        }
      },
      async recheck(deployment, reason) {
        return recheckDeployment(pool, deployment.id, `a relay batch failed: ${reason}`);
      },
      async close() {
        await capture.stop();
        await pool.end();
      },
    });
    this.#loop.on('batch', (result) => this.emit('batch', result));
    this.#loop.on('failure', (failure) => this.emit('failure', failure));
    this.#loop.on('ready', () => this.emit('ready'));
  }

  get deployments(): readonly ActiveDeployment[] {
    return this.#loop.deployments;
  }

  async start(): Promise<void> {
    const patiently = startupPatience(this.#log);
    await checkWorkerRole(this.#pool, this.#config.allowSuperuser, this.#log, patiently);
    this.#partitions.count = await ensureTopic(this.#kafka, this.#config);
    await this.#producer.connect();
    await this.#loop.start(patiently);
  }

  async stop(): Promise<void> {
    await this.#loop.stop();
    await this.#producer.disconnect();
  }
}

/**
 * A batch's rows as produce requests: each row goes to its partition (partition.ts), a partition's
 * rows in claim order in as few messages as fit (encodeRows); usually one request, more only when
 * a partition's messages exceed one message's size limit (each request stays within the broker's
 * limit per partition).
 */
export function relayMessages(deployment: ActiveDeployment, rows: readonly ClaimedRow[], now: number, partitions: number): Message[][] {
  const byPartition = new Map<number, ClaimedRow[]>();
  for (const row of rows) {
    const partition = partitionOf(rowKey(deployment.id, row.keys), partitions);
    const list = byPartition.get(partition);
    if (list) list.push(row);
    else byPartition.set(partition, [row]);
  }
  const requests: Message[][] = [];
  const key = String(deployment.id);
  for (const [partition, list] of byPartition) {
    encodeRows(deployment, list, now).forEach((value, i) => (requests[i] ??= []).push({ key, value, partition }));
  }
  return requests;
}

async function relayBatch(
  pool: pg.Pool,
  produce: ProduceQueue,
  config: Config,
  deployment: ActiveDeployment,
  sizer: ClaimSizer,
  partitions: number,
  isolate: boolean,
): Promise<BatchResult> {
  const started = performance.now();
  let claimedAt = started;
  let sentAt = started;
  let dead = 0;
  // Claimed keys whose row is gone: counted as claimed, so that the relay looks again (see claimAndScore).
  let missing = 0;
  const claimed = await inWritebackTransaction(pool, async (client) => {
    let rows: ClaimedRow[];
    if (isolate) {
      const result = await claimIsolated(client, deployment, config.batchSize, sizer);
      ({ rows, missing } = result);
      dead = result.dead.length;
    } else {
      ({ rows, missing } = await claimBatch(client, deployment, config.batchSize, sizer));
    }
    claimedAt = performance.now();
    if (rows.length === 0) return 0;
    const messages: Message[] = [];
    const produced: Produced[] = [];
    for (const request of relayMessages(deployment, rows, Date.now(), partitions)) {
      messages.push(...request);
      produced.push(...(await produce.send(request)));
    }
    sentAt = performance.now();
    await client.query(RECORD_RELAYED, [
      deployment.id,
      rows.length,
      config.kafkaTopic,
      produced.map((p) => p.partition),
      produced.map((p) => p.offset),
      messages.map((m) => rowsIn(m.value as Buffer)),
    ]);
    return rows.length;
    // Redoable: a commit a crash loses leaves the rows queued, and they are relayed again
    // (duplicates, which workers handle). Not waiting for the WAL flush also shortens the time
    // this holds the deployment's ml._kafka_counts row, which every relay lane updates.
  }, 'redoable');
  const done = performance.now();
  return {
    deployment: deployment.name,
    claimed: claimed + dead + missing,
    written: claimed,
    dead,
    requeued: 0,
    ms: done - started,
    phases: { claimMs: claimedAt - started, scoreMs: sentAt - claimedAt, writeMs: done - sentAt },
  };
}
