import { EventEmitter } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import type pg from 'pg';
import type { Config } from '../config.js';
import { HAS_EVENT_TRIGGERS } from '../db/statements.js';
import { describe, isRetriable } from '../errors.js';
import type { Logger } from '../log.js';
import { RateLimitedLog } from '../log-limit.js';
import { Upkeep } from '../lifecycle/upkeep.js';
import { reportDeadLetters, type BatchResult } from '../pipeline/batch.js';
import { classifyFailure, DeploymentHealth, type FailureAction } from '../pipeline/policy.js';
import { NotifyWakeup } from '../transport/notify.js';
import type { ActiveDeployment } from './deployments.js';

export interface LoopEvents {
  batch: [BatchResult];
  /** A batch failed; what the failure policy made of it (src/pipeline/policy.ts). */
  failure: [BatchFailure];
  ready: [];
}

export interface BatchFailure {
  readonly deployment: string;
  readonly kind: FailureAction['kind'];
  readonly reason: string;
}

export type LoopSettings = Pick<Config, 'batchSize' | 'maxWaitMs' | 'pollIntervalMs' | 'concurrency'>;

/** What a loop does with its queues: which deployments it serves, and one batch of one of them. */
export interface QueueHandler {
  load(): Promise<ActiveDeployment[]>;
  /**
   * Claims and handles one batch; `claimed` 0 means the queue was empty. A failure is handled
   * by the failure policy (src/pipeline/policy.ts).
   */
  handle(deployment: ActiveDeployment): Promise<BatchResult>;
  /** Re-plans a deployment after a failed batch (ml._recheck); returns its status. */
  recheck(deployment: ActiveDeployment, reason: string): Promise<string>;
  close(): Promise<void>;
}

/** Promise.withResolvers, which Node 20 lacks. */
function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

const RELOAD_EVERY_MS = 30_000;
/** At most this often, due rows that no claim took make the worker reload its deployments. */
const STALE_CHECK_EVERY_MS = 1_000;
const UNWATCHED_RELOAD_EVERY_MS = 2_000;
const MAX_ERROR_BACKOFF_MS = 5_000;
/**
 * While writers keep the idle lock busy (sustained load, no NOTIFY), the worker looks at the
 * queues after 1, 2, 4 … up to this many ms, and stays there until the load stops: batches grow
 * with the load instead of the worker spending the cores on a batch per few rows.
 */
const MAX_IDLE_RETRY_MS = 8;
/**
 * Under heavy load (rows arriving faster than BUSY_ROWS_PER_MS) it waits up to this long: a batch
 * has a fixed cost (statements, a commit), so fewer and larger batches leave more of the
 * machine to the writers. Latency stays within this wait plus a batch.
 */
const MAX_BUSY_RETRY_MS = 50;
const BUSY_ROWS_PER_MS = 4;
/**
 * Live traffic: after a batch, the worker waits GATHER_MS before it looks again, and keeps
 * looking that way (without the idle lock, so writers send no NOTIFY) until LINGER_MS pass
 * without a row. Each batch takes the rows of a few ms instead of one, so the worker runs far
 * fewer batches (and commits) for single-row writers; latency grows by at most GATHER_MS.
 */
const GATHER_MS = 2;
const LINGER_MS = 25;

/**
 * Drains the deployments' queues, for the notify worker and for the Kafka relay. Lanes
 * (PGSCORE_CONCURRENCY of them, each with its own connection) claim and handle batches until
 * every queue is empty, so one batch is scored while another is read or written. Then the loop
 * sleeps until a NOTIFY, a reconnect, a configuration change or the poll interval wakes it.
 */
export class QueueLoop extends EventEmitter<LoopEvents> {
  readonly #settings: LoopSettings;
  readonly #log: Logger;
  readonly #pool: pg.Pool;
  readonly #handler: QueueHandler;
  readonly #wakeup: NotifyWakeup;
  #deployments: ActiveDeployment[] = [];
  /** Deployments resting after failures (src/pipeline/policy.ts). */
  readonly #health = new DeploymentHealth();
  readonly #failureLog: RateLimitedLog;
  #cursor = 0;
  #stopping = false;
  #reloadDue = true;
  #errorBackoffMs = 0;
  #idleBackoffMs = 0;
  /** Rows claimed since the last look at the queues, and when that was (the arrival rate). */
  #claimedSince = 0;
  /** When a drain last found rows (see LINGER_MS). */
  #foundAt = -Infinity;
  #lookedAt = performance.now();
  #signal = deferred();
  #loop: Promise<void> | undefined;
  #timers: NodeJS.Timeout[] = [];
  readonly #upkeep: Upkeep;
  #staleCheckAt = 0;
  #releasing: Promise<void> = Promise.resolve();

  constructor(
    connectionString: string,
    pool: pg.Pool,
    settings: LoopSettings,
    log: Logger,
    handler: QueueHandler,
  ) {
    super();
    this.#settings = settings;
    this.#log = log;
    this.#pool = pool;
    this.#upkeep = new Upkeep(pool, log, () => this.#deployments);
    this.#handler = handler;
    this.#failureLog = new RateLimitedLog(log);
    this.#wakeup = new NotifyWakeup(connectionString, log, {
      onWake: () => this.#wake(),
      onConfig: () => {
        this.#reloadDue = true;
        this.#wake();
      },
      onReconnect: () => {
        this.#reloadDue = true;
        this.#wake();
      },
    });
  }

  get deployments(): readonly ActiveDeployment[] {
    return this.#deployments;
  }

  async start(): Promise<void> {
    await this.#wakeup.start();
    await this.#reload();
    // Without event triggers, schema changes are found by the re-check of every reload.
    const { rows } = await this.#pool.query<{ present: boolean }>(HAS_EVENT_TRIGGERS);
    const watched = rows[0]?.present === true;
    if (!watched) {
      this.#log.warn('no pgscore event triggers in this database (migrate ran without superuser): schema changes are checked every 2 s');
    }
    this.#timers.push(
      setInterval(() => {
        this.#reloadDue = true;
        if (!watched) this.#wake();
      }, watched ? RELOAD_EVERY_MS : UNWATCHED_RELOAD_EVERY_MS),
    );
    await this.#upkeep.start();
    this.#loop = this.#run();
    this.emit('ready');
  }

  /** Finishes the batches in flight, then closes every connection. */
  async stop(): Promise<void> {
    this.#stopping = true;
    this.#wake();
    for (const timer of this.#timers) clearInterval(timer);
    await this.#upkeep.stop();
    await this.#loop;
    await this.#releasing;
    await this.#wakeup.stop();
    await this.#handler.close();
  }

  #wake(): void {
    this.#signal.resolve();
  }

  /** Waits for a wake-up or the timeout; true when woken. */
  async #waitForWake(ms: number): Promise<boolean> {
    const signal = this.#signal.promise;
    const timeout = new AbortController();
    const woke = await Promise.race([signal.then(() => true), sleep(ms, false, { signal: timeout.signal }).catch(() => false)]);
    timeout.abort();
    if (woke) this.#signal = deferred();
    return woke;
  }

  async #run(): Promise<void> {
    while (!this.#stopping) {
      try {
        if (this.#reloadDue) await this.#reload();
        const found = await this.#drain();
        if (this.#stopping) break;
        await this.#pause(found);
      } catch (error) {
        await this.#backOff(error, 'worker loop failed');
      }
    }
  }

  async #reload(): Promise<void> {
    this.#reloadDue = false;
    try {
      this.#deployments = await this.#handler.load();
      this.#health.retain(new Set(this.#deployments.map((d) => d.id)));
      this.#log.debug({ deployments: this.#deployments.map((d) => d.name) }, 'deployments loaded');
    } catch (error) {
      this.#reloadDue = true;
      throw error;
    }
  }

  #live(): ActiveDeployment[] {
    return this.#deployments.filter((d) => !this.#health.isResting(d.id));
  }

  #nextDeployment(): ActiveDeployment | undefined {
    const live = this.#live();
    if (live.length === 0) return undefined;
    this.#cursor = (this.#cursor + 1) % live.length;
    return live[this.#cursor];
  }

  /**
   * Runs lanes until every deployment's queue came back empty; true if any row was claimed. A
   * lane that finds nothing while another lane's batch is in flight waits for it and looks
   * again if it found rows: that batch may hold queue rows locked that are not its own.
   */
  async #drain(): Promise<boolean> {
    let found = false;
    const inFlight = new Set<Promise<number>>();
    const lane = async () => {
      let emptyInARow = 0;
      while (!this.#stopping && !this.#reloadDue) {
        const deployment = this.#nextDeployment();
        if (!deployment) return;
        if (emptyInARow >= this.#live().length) {
          const others = [...inFlight];
          if (others.length === 0 || !(await Promise.all(others)).some((n) => n > 0)) return;
          emptyInARow = 0;
        }
        const batch = this.#handleOne(deployment);
        inFlight.add(batch);
        const claimed = await batch.finally(() => inFlight.delete(batch));
        this.#claimedSince += claimed;
        if (claimed > 0) {
          found = true;
          emptyInARow = 0;
        } else {
          emptyInARow += 1;
        }
      }
    };
    await Promise.all(Array.from({ length: this.#settings.concurrency }, lane));
    return found || this.#reloadDue;
  }

  async #handleOne(deployment: ActiveDeployment): Promise<number> {
    try {
      const result = await this.#handler.handle(deployment);
      this.#errorBackoffMs = 0;
      this.#health.succeeded(deployment.id);
      if (result.claimed > 0) {
        this.#log.debug(result, 'batch done');
        this.emit('batch', result);
      }
      reportDeadLetters(this.#failureLog, deployment, result);
      return result.claimed;
    } catch (error) {
      await this.#onFailure(deployment, error);
      return 0;
    }
  }

  /** The failure policy (src/pipeline/policy.ts): the rows stay queued in every case. */
  async #onFailure(deployment: ActiveDeployment, error: unknown): Promise<void> {
    const action = classifyFailure(error);
    this.emit('failure', { deployment: deployment.name, kind: action.kind, reason: action.reason });
    if (action.kind === 'reconnect') {
      await this.#backOff(error, 'batch failed; its rows stay queued', deployment.name);
      return;
    }
    const restMs = this.#health.failed(deployment.id, action.reason);
    const scope = { deployment: deployment.name, restMs: Math.round(restMs), err: error };
    if (action.kind === 'pause') {
      this.#failureLog.error(`pause:${deployment.id}`, scope, `deployment paused, its rows stay queued: ${action.reason}`);
      return;
    }
    this.#reloadDue = true;
    // Re-checked before anything is logged: a batch that fails because ml.undeploy dropped its
    // queue meanwhile (relation "ml._queue_N" does not exist, or a deadlock with the undeploy) is
    // the deployment being gone, not a failure.
    let status: string | undefined;
    try {
      status = await this.#handler.recheck(deployment, action.reason);
    } catch (recheckError) {
      this.#log.warn({ deployment: deployment.name, err: recheckError }, 'could not re-check the deployment');
    }
    if (status === 'undeployed') {
      this.#log.info({ deployment: deployment.name, err: error }, 'deployment undeployed while a batch ran; the batch is dropped with it');
      return;
    }
    this.#failureLog.error(`recheck:${deployment.id}`, scope, `batch failed, its rows stay queued; re-checked the deployment: ${action.reason}`);
    if (status !== undefined && status !== 'active') this.#log.warn({ deployment: deployment.name, status }, `deployment is ${status} now`);
  }

  async #backOff(error: unknown, message: string, deployment?: string): Promise<void> {
    this.#errorBackoffMs = Math.min(MAX_ERROR_BACKOFF_MS, Math.max(100, this.#errorBackoffMs * 2));
    const level = isRetriable(error) ? 'warn' : 'error';
    this.#log[level]({ deployment, err: error, retryInMs: this.#errorBackoffMs }, `${message}: ${describe(error)}`);
    await this.#waitForWake(this.#errorBackoffMs * (0.5 + Math.random() / 2));
  }

  /**
   * Between drains. With live traffic (rows found in the last LINGER_MS), gather rows for
   * GATHER_MS, or longer under heavy load, before the next batch; once it is quiet, idle.
   */
  async #pause(found: boolean): Promise<void> {
    const now = performance.now();
    if (found) this.#foundAt = now;
    if (now - this.#foundAt >= LINGER_MS) {
      await this.#idle();
      return;
    }
    this.#idleBackoffMs = this.#arrivingFast(now)
      ? Math.min(MAX_BUSY_RETRY_MS, Math.max(GATHER_MS, this.#idleBackoffMs * 2))
      : GATHER_MS;
    await this.#waitForWake(this.#idleBackoffMs);
  }

  /** Whether rows arrived faster than BUSY_ROWS_PER_MS since the last look. */
  #arrivingFast(now: number): boolean {
    const fast = this.#claimedSince / Math.max(1, now - this.#lookedAt) >= BUSY_ROWS_PER_MS;
    this.#claimedSince = 0;
    this.#lookedAt = now;
    return fast;
  }

  /** Out of work: sleep as the worker writers wake, or poll while writers still see us busy. */
  async #idle(): Promise<void> {
    await this.#releasing;
    if (await this.#wakeup.tryHoldIdleLock()) {
      this.#idleBackoffMs = 0;
      // Rows committed by writers that saw this worker busy (and so sent no NOTIFY).
      if (!(await this.#anyPending())) {
        const woke = await this.#waitForWake(this.#settings.pollIntervalMs);
        if (woke && this.#settings.maxWaitMs > 0 && !this.#stopping) await sleep(this.#settings.maxWaitMs);
      } else if (Date.now() - this.#staleCheckAt > STALE_CHECK_EVERY_MS) {
        // Rows are due but the claims took none: another worker holds them, or a deployment
        // was re-planned (a claim takes nothing from a stale plan) and its NOTIFY was missed.
        this.#staleCheckAt = Date.now();
        this.#reloadDue = true;
      }
      this.#releasing = this.#wakeup.releaseIdleLock();
    } else {
      // Writers that saw this worker busy are about to commit rows (and send no NOTIFY), or
      // another worker sleeps as the one writers wake (and we are woken with it): look again soon.
      // The retry delay resets only once this worker gets the idle lock (the load has stopped).
      const cap = this.#arrivingFast(performance.now()) ? MAX_BUSY_RETRY_MS : MAX_IDLE_RETRY_MS;
      this.#idleBackoffMs = Math.min(cap, Math.max(1, this.#idleBackoffMs * 2));
      await this.#waitForWake(this.#idleBackoffMs);
    }
  }

  async #anyPending(): Promise<boolean> {
    const live = this.#live();
    if (live.length === 0) return false;
    const { rows } = await this.#pool.query<{ pending: boolean }>(
      `SELECT ${live.map((d) => `(${d.sql.pending})`).join(' OR ')} AS pending`,
    );
    return rows[0]?.pending === true;
  }
}
