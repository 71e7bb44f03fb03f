import { EventEmitter } from 'node:events';
import type { Consumer } from 'kafkajs';
import type pg from 'pg';
import type { Config } from '../config.js';
import { createPool } from '../db/pool.js';
import { fetchModelBytes } from '../db/model-bytes.js';
import { COUNT_CONSUMED, INVALIDATE_UNWRITABLE, listParkedDeployments, recheckDeployment, RECORD_COMMITTED, RECORD_POISON } from '../db/statements.js';
import { describe } from '../errors.js';
import type { Logger } from '../log.js';
import { RateLimitedLog } from '../log-limit.js';
import { SessionCache } from '../models/sessions.js';
import { Upkeep } from '../lifecycle/upkeep.js';
import { inWritebackTransaction, reportDeadLetters, scoreBatch, type BatchResult } from '../pipeline/batch.js';
import { classifyFailure, DeploymentHealth } from '../pipeline/policy.js';
import { isTableFailure, isWriteRowFailure, UnwritableTableError } from '../pipeline/row-failure.js';
import type { ClaimedRow } from '../queue/claimed-row.js';
import { requeueRows } from '../queue/requeue.js';
import { parkingStatements } from '../queue/statements.js';
import { DriftRecorder } from '../monitoring/drift.js';
import { loadDeployments, RecheckCursor, versionsInUse, type ActiveDeployment } from '../worker/deployments.js';
import { checkWorkerRole } from '../worker/identity.js';
import { startupPatience } from '../db/patience.js';
import type { LoopEvents } from '../worker/loop.js';
import { createKafka, ensureTopic } from './kafka-client.js';
import { ChunkScheduler, type CommittedOffsets, type Slice } from './kafka-batches.js';
import { decodeMessage, rowsIn, toClaimedRow } from './message.js';

const RELOAD_EVERY_MS = 5_000;
const IS_ACTIVE = `SELECT status = 'active' AS active FROM ml._deployments WHERE id = $1`;
/** Rows of a paused deployment wait this long on its queue before the relay sends them again. */
const PAUSED_REQUEUE_DELAY_MS = 5_000;
/**
 * kafkajs hands a fetch's partition batches to at most this many eachBatch calls at once; the
 * chunk scheduler needs them all at once to combine partitions (more partitions than this still
 * work, in more chunks).
 */
const PARTITIONS_AT_ONCE = 256;

/**
 * After a broker restart kafkajs's consumers crash (its join gives up on a closed connection or a
 * coordinator still loading) and rejoin as new members; the coordinator then hands out no
 * partition until the old members' sessions have run out. kafkajs has no static membership
 * (group.instance.id, tulios/kafkajs#884) that would let a restarted member take its place, so
 * recovery takes about the session: the shortest the broker accepts by default.
 */
const SESSION_TIMEOUT_MS = 6_000;
/**
 * The consumer's retries: kafkajs's default (5, from 300 ms doubling) ends in a crash whose
 * restart waits the last retry's delay, 5.5-18 s in all; retries at most 1 s apart bring a
 * crashed consumer back within a second of the broker.
 */
const CONSUMER_RETRY = { initialRetryTime: 100, maxRetryTime: 1_000, retries: 30 };

interface Poison {
  readonly topic: string;
  readonly partition: number;
  readonly offset: string;
  readonly key: string | null;
  readonly reason: string;
}

/**
 * `pgscore worker --transport kafka`: one member of a consumer group. The messages of a fetch are
 * cut into chunks of up to PGSCORE_BATCH_SIZE rows across partitions (kafka-batches.ts); each
 * chunk is scored and written in one transaction, PGSCORE_CONCURRENCY chunks at a time, and its
 * offsets are committed only after that transaction commits, so a crash redelivers rather than
 * loses. The write-back only touches rows still at the version a message was read at, so a
 * redelivered or reordered message never overwrites a prediction from newer values.
 */
export class KafkaWorker extends EventEmitter<LoopEvents> {
  readonly #config: Config;
  readonly #log: Logger;
  readonly #pool: pg.Pool;
  readonly #models: SessionCache;
  readonly #recheck = new RecheckCursor();
  #stopping = false;
  #restarting: Promise<void> | undefined;
  /** A disconnect of a consumer that kafkajs started again after stop() (#disconnectLate). */
  #late: Promise<void> | undefined;
  readonly #consumer: Consumer;
  readonly #kafka;
  #deployments = new Map<number, ActiveDeployment>();
  #parked = new Map<number, ReturnType<typeof parkingStatements>>();
  readonly #health = new DeploymentHealth();
  /** Deployments whose table took no prediction in this chunk, with the reason (invalidated after it commits). */
  readonly #unwritable = new Map<number, string>();
  readonly #failureLog: RateLimitedLog;
  #loadedAt = 0;
  #reloading: Promise<void> | undefined;
  #reloadBeforeNextChunk = false;
  readonly #upkeep: Upkeep;
  readonly #drift: DriftRecorder;
  readonly #chunks: ChunkScheduler;
  /** Records of committed offsets, one at a time, in order (#recordCommitted). */
  #recording: Promise<void> = Promise.resolve();

  constructor(connectionString: string, config: Config, log: Logger) {
    super();
    this.#config = config;
    this.#log = log;
    this.#failureLog = new RateLimitedLog(log);
    this.#kafka = createKafka(config, log);
    this.#consumer = this.#kafka.consumer({
      groupId: config.kafkaGroup,
      allowAutoTopicCreation: false,
      // The shortest session the broker accepts by default (group.min.session.timeout.ms; kafkajs
      // defaults to 30 s): after a broker restart or a worker's death the group waits this long
      // for the members that will not come back (see CONSUMER_RETRY). Heartbeats go every second,
      // between chunks.
      sessionTimeout: SESSION_TIMEOUT_MS,
      heartbeatInterval: 1_000,
      retry: CONSUMER_RETRY,
    });
    this.#chunks = new ChunkScheduler(
      {
        rowsPerChunk: config.batchSize,
        lanes: config.concurrency,
        rowsIn: (message) => rowsIn(message.value),
        onCommitFailure: (error) => this.#failureLog.warn('commit', { err: error }, `offset commit failed; messages handled since the last one will be redelivered: ${describe(error)}`),
        onCommitted: (topics) => this.#recordCommitted(topics),
      },
      (slices) => this.#handleChunk(slices),
    );
    this.#pool = createPool(connectionString, { max: config.concurrency + 1, name: 'kafka worker' });
    this.#pool.on('error', (error) => log.warn({ err: error }, 'idle pooled connection lost'));
    this.#models = new SessionCache((name, version) => fetchModelBytes(this.#pool, name, version), {
      threads: config.ortThreads,
    });
    this.#drift = new DriftRecorder(this.#pool, log);
    this.#upkeep = new Upkeep(this.#pool, log, async () => {
      if (Date.now() - this.#loadedAt > RELOAD_EVERY_MS) await this.#reload();
      return this.deployments;
    });
  }

  get deployments(): readonly ActiveDeployment[] {
    return [...this.#deployments.values()];
  }

  async start(): Promise<void> {
    const patiently = startupPatience(this.#log);
    await checkWorkerRole(this.#pool, this.#config.allowSuperuser, this.#log, patiently);
    await patiently(() => this.#reload());
    await ensureTopic(this.#kafka, this.#config);
    await this.#consumer.connect();
    await this.#consumer.subscribe({ topic: this.#config.kafkaTopic, fromBeginning: true });
    const joined = new Promise<void>((resolve) => {
      const off = this.#consumer.on(this.#consumer.events.GROUP_JOIN, () => {
        off();
        resolve();
      });
    });
    // Each join: the group's offsets as its coordinator has them (a worker may have died between
    // a commit and its record).
    this.#consumer.on(this.#consumer.events.GROUP_JOIN, () => {
      // A join after stop() is kafkajs's restart outliving it (#disconnectLate); it counts as
      // running once the join has returned.
      if (this.#stopping) setImmediate(() => this.#disconnectLate());
      else void this.#syncCommitted();
    });
    // kafkajs starts a consumer that crashed on a retriable error again itself; one that crashed
    // on any other (KafkaJSGroupCoordinatorNotFound after the broker was out of reach, the
    // generated suite's K1) would stay stopped for good, its partitions unread.
    this.#consumer.on(this.#consumer.events.CRASH, (event) => {
      if (this.#stopping) {
        // kafkajs schedules its restart right after this event: a disconnect clears it.
        if (event.payload.restart) setImmediate(() => this.#disconnectLate());
        return;
      }
      if (event.payload.restart) return;
      this.#log.warn({ err: event.payload.error }, `Kafka consumer stopped (${describe(event.payload.error)}); starting it again`);
      this.#restarting ??= this.#restartConsumer().finally(() => (this.#restarting = undefined));
    });
    await this.#runConsumer();
    await joined;
    await this.#upkeep.start();
    this.#drift.start();
    this.emit('ready');
  }

  #runConsumer(): Promise<void> {
    return this.#consumer.run({
      eachBatchAutoResolve: false,
      // The chunk scheduler commits each chunk's offsets once its transaction has committed.
      autoCommit: false,
      partitionsConsumedConcurrently: PARTITIONS_AT_ONCE,
      eachBatch: (payload) => {
        if (!this.#stopping) return this.#chunks.eachBatch(payload);
        this.#disconnectLate();
        return Promise.resolve();
      },
    });
  }

  /**
   * kafkajs's restart of a crashed consumer can outlive stop(): a disconnect during the restart's
   * join finds no runner running, and the join then completes. That member heartbeats and holds
   * partitions with nothing to handle them: their messages wait until it dies (the generated
   * suite, after a worker was stopped and replaced during a broker restart: 60 s). A batch after
   * stop() is that member; it is disconnected again, and leaves the group.
   */
  #disconnectLate(): void {
    this.#late ??= this.#consumer
      .disconnect()
      .catch((error: unknown) => this.#log.debug({ reason: describe(error) }, 'could not disconnect the Kafka consumer'))
      .finally(() => (this.#late = undefined));
  }

  /** Connects the crashed consumer again and rejoins the group, trying every second until it does. */
  async #restartConsumer(): Promise<void> {
    while (!this.#stopping) {
      try {
        await this.#consumer.disconnect();
        await this.#consumer.connect();
        await this.#consumer.subscribe({ topic: this.#config.kafkaTopic, fromBeginning: true });
        await this.#runConsumer();
        this.#log.info('Kafka consumer started again');
        return;
      } catch (error) {
        this.#failureLog.warn('consumer-restart', { err: error }, `starting the Kafka consumer again failed: ${describe(error)}`);
        await new Promise((resolve) => setTimeout(resolve, 1_000));
      }
    }
  }

  async stop(): Promise<void> {
    this.#stopping = true;
    await this.#restarting;
    await this.#upkeep.stop();
    await this.#drift.stop();
    await this.#chunks.stop();
    await this.#consumer.disconnect();
    await this.#recording;
    await this.#models.close();
    await this.#pool.end();
  }

  /**
   * Records offsets the group committed: ml.status.in_kafka counts the rows of the messages past
   * them. A failure costs only that count's accuracy until the next commit: logged, not retried.
   */
  #recordCommitted(topics: readonly CommittedOffsets[]): void {
    this.#recording = this.#recording
      .then(async () => {
        for (const { topic, partitions } of topics) {
          if (partitions.length === 0) continue;
          await this.#pool.query(RECORD_COMMITTED, [topic, partitions.map((p) => p.partition), partitions.map((p) => p.offset)]);
        }
      })
      .catch((error: unknown) => {
        this.#failureLog.warn('record-commit', { reason: describe(error) }, `could not record the committed offsets (ml.status.in_kafka): ${describe(error)}`);
      });
  }

  async #syncCommitted(): Promise<void> {
    const admin = this.#kafka.admin();
    try {
      await admin.connect();
      const [fetched] = await admin.fetchOffsets({ groupId: this.#config.kafkaGroup, topics: [this.#config.kafkaTopic] });
      // -1: nothing committed yet.
      const partitions = (fetched?.partitions ?? []).filter((p) => !p.offset.startsWith('-'));
      this.#recordCommitted([{ topic: this.#config.kafkaTopic, partitions }]);
    } catch (error) {
      this.#log.debug({ reason: describe(error) }, 'could not read the group\'s committed offsets');
    } finally {
      await admin.disconnect().catch(() => undefined);
    }
  }

  async #reload(): Promise<void> {
    this.#reloading ??= loadDeployments(this.#pool, this.#models, this.#log, this.#recheck)
      .then(async (list) => {
        await this.#drift.load(list.flatMap(versionsInUse));
        this.#deployments = new Map(list.map((d) => [d.id, d]));
        this.#health.retain(new Set(this.#deployments.keys()));
        const parked = await listParkedDeployments(this.#pool);
        this.#parked = new Map(parked.map((deployment) => [deployment.id, parkingStatements(deployment)]));
        this.#loadedAt = Date.now();
      })
      .finally(() => {
        this.#reloading = undefined;
      });
    await this.#reloading;
  }

  /**
   * Deployments (and promotions) are re-read every few seconds by the upkeep, not in a chunk's
   * way (a message built for another version or mapping is queued again and makes the next chunk
   * reload). A message for a deployment not in the list asks the database whether it is active:
   * one activated after the last reload read the list is loaded (a list a few ms old dropped the
   * first rows of a new deployment: the generated suite's K2); one undeployed, dropped or
   * invalid is not. `checked` holds the answers of one chunk.
   */
  async #deployment(id: number, checked: Set<number>): Promise<ActiveDeployment | undefined> {
    const known = this.#deployments.get(id);
    if (known || checked.has(id)) return known;
    checked.add(id);
    const { rows } = await this.#pool.query<{ active: boolean }>(IS_ACTIVE, [id]);
    if (rows[0]?.active) await this.#reload();
    return this.#deployments.get(id);
  }

  async #handleChunk(slices: readonly Slice[], isolate = false): Promise<void> {
    if (this.#reloadBeforeNextChunk) {
      this.#reloadBeforeNextChunk = false;
      await this.#reload();
    }
    const started = performance.now();
    const now = Date.now();
    const poison: Poison[] = [];
    const groups = new Map<number, Group>();
    const parked = new Map<number, ReturnType<typeof parkingStatements> & { rows: ClaimedRow[] }>();
    const checked = new Set<number>();
    for (const { topic, partition, messages } of slices) {
      for (const message of messages) {
        const decoded = decodeMessage(message.value);
        if (!decoded.ok) {
          poison.push({ topic, partition, offset: message.offset, key: message.key?.toString('utf8') ?? null, reason: decoded.reason });
          continue;
        }
        const { deployment: id, fingerprint, keyCount, rows } = decoded.message;
        const deployment = await this.#deployment(id, checked);
        if (!deployment) {
          // Invalid since (its queue is kept): park the rows there for ml.deploy. Undeployed or
          // dropped: nothing to write to.
          const target = this.#parked.get(id);
          if (target && keyCount === target.keyCount) {
            const entry = parked.get(id) ?? { ...target, rows: [] };
            for (const row of rows) entry.rows.push(toClaimedRow(row, now));
            parked.set(id, entry);
          }
          continue;
        }
        let group = groups.get(deployment.id);
        if (!group) groups.set(deployment.id, (group = new Group(deployment)));
        // Checked against the deployment that scores the group (a reload may happen mid-chunk).
        if (fingerprint !== group.deployment.sql.fingerprint || keyCount !== group.deployment.keyCount) {
          // Built for another version or mapping (a promotion, a re-plan): read the rows afresh,
          // and reload before the next chunk, in case this worker is the one behind.
          for (const row of rows) group.stale.push(toClaimedRow(row, now));
          this.#reloadBeforeNextChunk = true;
        } else {
          for (const row of rows) group.add(toClaimedRow(row, now));
        }
      }
    }

    const handled: { deployment: ActiveDeployment; result: { dead: number; deadReason?: string }; batch: BatchResult }[] = [];
    try {
      await inWritebackTransaction(this.#pool, async (client) => {
        if (poison.length > 0) {
          await client.query(RECORD_POISON, [
            poison.map((p) => p.topic),
            poison.map((p) => p.partition),
            poison.map((p) => p.offset),
            poison.map((p) => p.key),
            poison.map((p) => p.reason),
          ]);
          this.#log.warn({ poison }, 'undecodable messages recorded in ml.errors');
        }
        for (const target of parked.values()) await requeueRows(client, target, target.rows, 0);
        for (const group of groups.values()) {
          const { deployment, stale, consumed } = group;
          const rows = group.rows();
          const claimedAt = performance.now();
          const result = await this.#scoreGroup(client, deployment, rows, claimedAt, isolate);
          await requeueRows(client, deployment, stale, 0);
          const done = performance.now();
          handled.push({
            deployment,
            result,
            batch: {
              deployment: deployment.name,
              claimed: consumed + stale.length,
              written: result.written,
              dead: result.dead,
              requeued: result.requeued + stale.length,
              ms: done - started,
              phases: { claimMs: claimedAt - started, scoreMs: result.scoredAt - claimedAt, writeMs: done - result.scoredAt },
            },
          });
        }
        // Last, in deployment order (see COUNT_CONSUMED): no deadlock between chunks.
        if (groups.size > 0) {
          const counted = [...groups.values()].sort((a, b) => a.deployment.id - b.deployment.id);
          await client.query(COUNT_CONSUMED, [counted.map((g) => g.deployment.id), counted.map((g) => g.consumed + g.stale.length)]);
        }
      });
      // Reported once committed: a chunk that rolls back is redelivered and counted then.
      for (const [id, reason] of this.#unwritable) {
        await this.#pool.query(INVALIDATE_UNWRITABLE, [id, reason]);
        this.#reloadBeforeNextChunk = true;
      }
      this.#unwritable.clear();
      for (const { deployment, result, batch } of handled) {
        this.emit('batch', batch);
        reportDeadLetters(this.#failureLog, deployment, result);
      }
    } catch (error) {
      this.#unwritable.clear();
      // A row's write failed the chunk: score it again at once, writing in savepoints, so that
      // the failing rows become dead letters and the others are written (writePredictionsIsolated).
      if (!isolate && (isWriteRowFailure(error) || isTableFailure(error))) return this.#handleChunk(slices, true);
      // The failure policy: nothing of the chunk committed and its offsets stay uncommitted, so
      // Kafka redelivers it. A deployment whose write failed is re-checked first (a schema change
      // turns it invalid, and its rows are parked on the redelivery).
      const action = classifyFailure(error);
      const statuses: string[] = [];
      if (action.kind === 'recheck') {
        for (const { deployment } of groups.values()) {
          statuses.push(await recheckDeployment(this.#pool, deployment.id, `a Kafka batch failed: ${action.reason}`).catch(() => 'unknown'));
        }
        this.#reloadBeforeNextChunk = true;
      }
      const partitions = slices.map(({ topic, partition }) => `${topic}/${partition}`);
      // A chunk that failed because ml.undeploy dropped its deployments' queues meanwhile is
      // those deployments being gone, not a failure: their messages are skipped on redelivery.
      if (statuses.length > 0 && statuses.every((status) => status === 'undeployed')) {
        this.#log.info({ partitions, err: error }, 'deployment undeployed while a Kafka batch ran; its messages are dropped with it');
        throw error;
      }
      for (const { deployment } of groups.values()) this.emit('failure', { deployment: deployment.name, kind: action.kind, reason: action.reason });
      this.#failureLog.error(`chunk:${action.kind}`, { partitions, err: error }, `Kafka batch failed, it will be redelivered: ${action.reason}`);
      await new Promise((resolve) => setTimeout(resolve, 250 + Math.random() * 250));
      throw error;
    }
  }

  /**
   * Scores one deployment's rows, or (its model does not load: the failure policy's pause) puts
   * them back on the deployment's queue to wait, as the notify worker leaves them queued.
   */
  async #scoreGroup(client: pg.ClientBase, deployment: ActiveDeployment, rows: ClaimedRow[], claimedAt: number, isolate: boolean) {
    if (rows.length === 0) return { written: 0, dead: 0, requeued: 0, scoredAt: claimedAt };
    if (!this.#health.isResting(deployment.id)) {
      try {
        const result = await scoreBatch(client, deployment, this.#models, rows, claimedAt, this.#drift, isolate);
        this.#health.succeeded(deployment.id);
        return result;
      } catch (error) {
        if (error instanceof UnwritableTableError) {
          // Its rows wait on its queue; the deployment turns invalid once the chunk committed.
          this.#unwritable.set(deployment.id, error.message);
          await requeueRows(client, deployment, rows, 0);
          return { written: 0, dead: 0, requeued: rows.length, scoredAt: performance.now() };
        }
        if (classifyFailure(error).kind !== 'pause') throw error;
        const restMs = this.#health.failed(deployment.id, describe(error));
        this.emit('failure', { deployment: deployment.name, kind: 'pause', reason: describe(error) });
        this.#failureLog.error(`pause:${deployment.id}`, { deployment: deployment.name, restMs, err: error },
          `deployment paused, its rows wait on its queue: ${describe(error)}`);
      }
    }
    await requeueRows(client, deployment, rows, PAUSED_REQUEUE_DELAY_MS);
    return { written: 0, dead: 0, requeued: rows.length, scoredAt: performance.now() };
  }
}

/**
 * One deployment's rows of a chunk. A row relayed more than once (changed again, or sent twice)
 * is scored once, from its last message: like a notify claim, a batch holds each key once, which
 * the write-back's single statement relies on (one dead letter, one side-table row per key).
 */
class Group {
  readonly stale: ClaimedRow[] = [];
  readonly #rows = new Map<string, ClaimedRow>();
  /** Rows of the chunk's messages, duplicates included (ml._kafka_counts counts messages' rows). */
  consumed = 0;

  constructor(readonly deployment: ActiveDeployment) {}

  add(row: ClaimedRow): void {
    this.consumed += 1;
    const key = row.keys.length === 1 ? row.keys[0]! : JSON.stringify(row.keys);
    this.#rows.delete(key);
    this.#rows.set(key, row);
  }

  rows(): ClaimedRow[] {
    return [...this.#rows.values()];
  }
}
