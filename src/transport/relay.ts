import { EventEmitter } from 'node:events';
import { CompressionTypes, type Producer } from 'kafkajs';
import type pg from 'pg';
import type { Config } from '../config.js';
import { createPool } from '../db/pool.js';
import { COUNT_RELAYED, RECHECK_DEPLOYMENT } from '../db/statements.js';
import type { Logger } from '../log.js';
import { inWritebackTransaction, type BatchResult } from '../pipeline/batch.js';
import { claimBatch, ClaimSizer } from '../queue/claim.js';
import { checkWorkerRole } from '../worker/identity.js';
import { listDeployments, type ActiveDeployment } from '../worker/deployments.js';
import { QueueLoop, type LoopEvents } from '../worker/loop.js';
import { createKafka, ensureTopic } from './kafka-client.js';
import { encodeRow } from './message.js';

/**
 * `pgscore relay`: drains the queues like a notify worker, but instead of scoring it produces
 * each claimed row, with its input values, to the Kafka topic, and deletes the queue rows only
 * after every broker in sync has acknowledged them (acks=all, idempotent producer), in the same
 * transaction that claimed them. A crash between the acknowledgement and the commit sends the
 * rows again (duplicates); nothing is ever deleted unsent.
 */
export class Relay extends EventEmitter<LoopEvents> {
  readonly #config: Config;
  readonly #loop: QueueLoop;
  readonly #producer: Producer;
  readonly #kafka;
  readonly #pool: pg.Pool;
  readonly #log: Logger;

  constructor(connectionString: string, config: Config, log: Logger) {
    super();
    this.#config = config;
    this.#log = log;
    this.#kafka = createKafka(config, log);
    this.#producer = this.#kafka.producer({ idempotent: true, maxInFlightRequests: 1, allowAutoTopicCreation: false });
    const pool = createPool(connectionString, { max: config.concurrency + 1, name: 'relay' });
    pool.on('error', (error) => log.warn({ err: error }, 'idle pooled connection lost'));
    const producer = this.#producer;
    const sizer = new ClaimSizer(config.batchSize);
    this.#pool = pool;
    this.#loop = new QueueLoop(connectionString, pool, config, log, {
      load: () => listDeployments(pool, log),
      handle: (deployment) => relayBatch(pool, producer, config, deployment, sizer),
      async recheck(deployment, reason) {
        const { rows } = await pool.query<{ status: string }>(RECHECK_DEPLOYMENT, [deployment.id, `a relay batch failed: ${reason}`]);
        return rows[0]?.status ?? 'undeployed';
      },
      async close() {
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
    await checkWorkerRole(this.#pool, this.#config.allowSuperuser, this.#log);
    await ensureTopic(this.#kafka, this.#config);
    await this.#producer.connect();
    await this.#loop.start();
  }

  async stop(): Promise<void> {
    await this.#loop.stop();
    await this.#producer.disconnect();
  }
}

async function relayBatch(
  pool: pg.Pool,
  producer: Producer,
  config: Config,
  deployment: ActiveDeployment,
  sizer: ClaimSizer,
): Promise<BatchResult> {
  const started = performance.now();
  let claimedAt = started;
  let sentAt = started;
  const claimed = await inWritebackTransaction(pool, async (client) => {
    const rows = await claimBatch(client, deployment, config.batchSize, sizer);
    claimedAt = performance.now();
    if (rows.length === 0) return 0;
    const now = Date.now();
    await producer.send({
      topic: config.kafkaTopic,
      acks: -1,
      compression: CompressionTypes.None,
      messages: rows.map((row) => encodeRow(deployment, row, now)),
    });
    sentAt = performance.now();
    await client.query(COUNT_RELAYED, [deployment.id, rows.length]);
    return rows.length;
  });
  const done = performance.now();
  return {
    deployment: deployment.name,
    claimed,
    written: claimed,
    dead: 0,
    requeued: 0,
    ms: done - started,
    phases: { claimMs: claimedAt - started, scoreMs: sentAt - claimedAt, writeMs: done - sentAt },
  };
}
