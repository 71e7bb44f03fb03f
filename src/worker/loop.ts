import { EventEmitter } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import type pg from 'pg';
import type { Config } from '../config.js';
import type { Patiently } from '../db/patience.js';
import { HAS_EVENT_TRIGGERS } from '../db/statements.js';
import { describe, isRetriable } from '../errors.js';
import type { Logger } from '../log.js';
import { RateLimitedLog } from '../log-limit.js';
import { Upkeep } from '../lifecycle/upkeep.js';
import { reportDeadLetters, type BatchResult } from '../pipeline/batch.js';
import { classifyFailure, DeploymentHealth, type FailureAction } from '../pipeline/policy.js';
import { QUEUES_WITH_WORK } from '../db/statements.js';
import { NotifyWakeup, type QueueHeads } from '../transport/notify.js';
import type { ActiveDeployment } from './deployments.js';
import { LaneChoice } from './lane-choice.js';

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
  handle(deployment: ActiveDeployment, batchSize?: number): Promise<BatchResult>;
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
 * While busy (writers send no NOTIFY then), the worker reads the queue heads (one statement for
 * every deployment, ml._queue_heads) at most this often, and at most a fifth of the time, to
 * find the deployments that got rows meanwhile.
 */
const BUSY_LOOK_EVERY_MS = 5;
/**
 * The slow safety poll, every this many poll intervals, busy or idle: every deployment's queue
 * looked at for due rows, whatever the heads said (rows of a writer whose transaction was still
 * open at two looks while the worker was busy, rows a lost NOTIFY announced).
 */
const SAFETY_POLL_EVERY_POLLS = 10;
/** Rows put back on a queue (locked elsewhere, or changed) are due later: look again after this. */
const REQUEUED_LOOK_AFTER_MS = 1_000;

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
  #byId = new Map<number, ActiveDeployment>();
  /**
   * The deployments whose queue may have work: the drain visits only these. A NOTIFY names one,
   * the queue heads name those that got rows while the worker was busy, the safety poll finds
   * the rest. A deployment leaves the set when a claim of its queue comes back empty.
   */
  readonly #dirty = new Set<number>();
  #dirtyChanged = deferred();
  /** Queue heads read under the idle lock, when no writer that saw the worker busy was in flight. */
  #lockedHeads: QueueHeads | undefined;
  /**
   * Queue heads of the last two looks while busy (see BUSY_LOOK_EVERY_MS). A look marks the
   * deployments whose head moved since the look before the last: a row whose writer had not
   * committed at the first look is claimed again after the second.
   */
  #busyHeads: QueueHeads = new Map();
  #busyHeadsBefore: QueueHeads = new Map();
  /** When the last safety poll ran (it also runs while busy: a long writer transaction). */
  #safetyAt = performance.now();
  #busyLookAt = 0;
  #busyLookCostMs = 0;
  #looking: Promise<void> | undefined;
  #safetyDue = false;
  /** Deployments with rows put back on their queue, and when to look at them again. */
  readonly #requeuedAt = new Map<number, number>();
  readonly #lanes = new LaneChoice();
  /** Marked (NOTIFY, a look) since their last claim started. */
  readonly #markedSince = new Set<number>();
  /** Until when a deployment that had rows stays marked (see LINGER_MS). */
  readonly #activeUntil = new Map<number, number>();
  /** Deployments resting after failures (src/pipeline/policy.ts). */
  readonly #health = new DeploymentHealth();
  readonly #failureLog: RateLimitedLog;
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
  /** A reload in the background (see #startReload). */
  #reloading: Promise<void> | undefined;

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
      onWake: (deployment) => {
        if (deployment === undefined) this.#safetyDue = true;
        else if (this.#byId.has(deployment)) this.#markDirty(deployment);
        else return;
        this.#wake();
      },
      onConfig: () => {
        this.#reloadDue = true;
        this.#wake();
      },
      onReconnect: () => {
        // Notifications may have been missed.
        this.#reloadDue = true;
        this.#safetyDue = true;
        this.#wake();
      },
    }, pool);
  }

  get deployments(): readonly ActiveDeployment[] {
    return this.#deployments;
  }

  /** Starts within the given start's patience for a database that cannot be reached yet. */
  async start(patiently: Patiently): Promise<void> {
    await this.#wakeup.start(patiently);
    await patiently(() => this.#reload());
    // Every deployment is visited once now; the heads read under the idle lock (no writer that
    // saw the worker busy is in flight) are the baseline the next looks compare with.
    if (await this.#wakeup.tryHoldIdleLock()) {
      const heads = await this.#wakeup.queueHeads();
      if (heads) {
        this.#lockedHeads = heads;
        this.#busyHeads = heads;
        this.#busyHeadsBefore = heads;
      }
      await this.#wakeup.releaseIdleLock();
    }
    // Without event triggers, schema changes are found by the re-check of every reload.
    const { rows } = await patiently(() => this.#pool.query<{ present: boolean }>(HAS_EVENT_TRIGGERS));
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
    await this.#reloading;
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
        if (this.#reloadDue) this.#startReload();
        const found = await this.#drain();
        if (this.#stopping) break;
        await this.#pause(found);
      } catch (error) {
        await this.#backOff(error, 'worker loop failed');
      }
    }
  }

  /**
   * Reloads the deployments while the lanes go on draining: re-checking every deployment against
   * its table takes about 50 ms each on a busy server (15 s for 300), and the drain stopped for it
   * (every 30 s). A claim of a re-planned deployment takes nothing until the reload is done.
   */
  #startReload(): void {
    if (this.#reloading) return;
    this.#reloading = this.#reload().catch(async (error: unknown) => {
      this.#errorBackoffMs = Math.min(MAX_ERROR_BACKOFF_MS, Math.max(100, this.#errorBackoffMs * 2));
      const level = isRetriable(error) ? 'warn' : 'error';
      this.#log[level]({ err: error, retryInMs: this.#errorBackoffMs }, `reloading the deployments failed: ${describe(error)}`);
      await sleep(this.#errorBackoffMs * (0.5 + Math.random() / 2));
    }).finally(() => {
      this.#reloading = undefined;
      this.#wake();
    });
  }

  async #reload(): Promise<void> {
    this.#reloadDue = false;
    try {
      const first = this.#byId.size === 0 && this.#lockedHeads === undefined;
      this.#deployments = await this.#handler.load();
      const before = this.#byId;
      this.#byId = new Map(this.#deployments.map((d) => [d.id, d]));
      const ids = new Set(this.#byId.keys());
      this.#health.retain(ids);
      for (const id of this.#dirty) if (!ids.has(id)) this.#dirty.delete(id);
      this.#lanes.retain(ids);
      for (const id of [...this.#requeuedAt.keys(), ...this.#activeUntil.keys()]) {
        if (!ids.has(id)) {
          this.#requeuedAt.delete(id);
          this.#activeUntil.delete(id);
        }
      }
      // New (or re-activated, or re-planned) deployments are looked at once; at start, all are.
      for (const d of this.#deployments) if (first || before.get(d.id)?.rowVersion !== d.rowVersion) this.#markDirty(d.id);
      this.#log.debug({ deployments: this.#deployments.length }, 'deployments loaded');
    } catch (error) {
      this.#reloadDue = true;
      throw error;
    }
  }

  #markDirty(id: number): void {
    this.#markedSince.add(id);
    this.#dirty.add(id);
    this.#dirtyChanged.resolve();
    this.#dirtyChanged = deferred();
  }

  /** Marks the deployments whose queue head moved since `seen` (and those never seen). */
  #markMoved(heads: QueueHeads, seen: QueueHeads | undefined): void {
    for (const [id, head] of heads) {
      if (!this.#byId.has(id)) continue;
      // A queue that never had a row (head NULL) has nothing to claim.
      if ((seen?.get(id) ?? null) !== head) this.#markDirty(id);
    }
  }

  /**
   * While busy: reads the queue heads and marks the deployments that got rows since the last
   * look. Also marks deployments whose requeued rows are due, and runs the safety poll when due.
   */
  #lookWhileBusy(): void {
    const now = performance.now();
    if (now - this.#safetyAt > SAFETY_POLL_EVERY_POLLS * this.#settings.pollIntervalMs) this.#safetyDue = true;
    for (const [id, at] of this.#requeuedAt) {
      if (at <= now) {
        this.#requeuedAt.delete(id);
        this.#markDirty(id);
      }
    }
    if (this.#looking || now - this.#busyLookAt < Math.max(BUSY_LOOK_EVERY_MS, 4 * this.#busyLookCostMs)) return;
    this.#busyLookAt = now;
    this.#looking = (async () => {
      const heads = await this.#wakeup.queueHeads();
      this.#busyLookCostMs = performance.now() - now;
      if (!heads) return;
      for (const [id, head] of heads) {
        if (!this.#byId.has(id) || (this.#busyHeadsBefore.get(id) ?? null) === head) continue;
        this.#markDirty(id);
      }
      this.#busyHeadsBefore = this.#busyHeads;
      this.#busyHeads = heads;
    })().finally(() => (this.#looking = undefined));
  }

  /** The slow safety poll: every deployment with due rows is marked, whatever the heads said. */
  async #safetyPoll(): Promise<void> {
    this.#safetyDue = false;
    this.#safetyAt = performance.now();
    const ids = [...this.#byId.keys()];
    if (ids.length === 0) return;
    const { rows } = await this.#pool.query<{ id: number }>(QUEUES_WITH_WORK, [ids]);
    const unseen = rows.filter((row) => !this.#dirty.has(row.id));
    for (const row of rows) this.#markDirty(row.id);
    if (unseen.length > 0 && this.#dirtyIsStale()) this.#reloadDue = true;
  }

  /** Deployments with work that are not resting, less those a drain found empty (`empty`). */
  #pickable(empty: ReadonlySet<number> = new Set()): number[] {
    const now = performance.now();
    return [...this.#dirty].filter((id) => this.#byId.has(id) && !this.#health.isResting(id) && !empty.has(id) &&
      !this.#lanes.isCooling(id, now));
  }

  /** The next deployment for a lane (src/worker/lane-choice.ts). */
  #pick(empty: ReadonlySet<number>): ActiveDeployment | undefined {
    const id = this.#lanes.pick(this.#pickable(empty));
    return id === undefined ? undefined : this.#byId.get(id);
  }

  /**
   * Runs lanes until every deployment with work came back empty once; true if any row was
   * claimed. A lane with nothing to pick while another lane's batch is in flight waits for it
   * (that batch may hold queue rows locked that are not its own) or for a deployment to get work.
   * A deployment that had rows in the last LINGER_MS stays marked for the next drain: writers
   * send no NOTIFY while the worker is busy, and live traffic comes back within a few ms.
   */
  async #drain(): Promise<boolean> {
    let found = false;
    const inFlight = new Set<Promise<number>>();
    const empty = new Set<number>();
    const lane = async () => {
      while (!this.#stopping) {
        this.#lookWhileBusy();
        if (this.#safetyDue) await this.#safetyPoll();
        // Marked again since it came back empty: look again in this drain.
        for (const id of empty) if (this.#markedSince.has(id)) empty.delete(id);
        const deployment = this.#pick(empty);
        if (!deployment) {
          if (inFlight.size === 0 && this.#pickable(empty).length === 0) return;
          const timeout = new AbortController();
          await Promise.race([...inFlight, this.#dirtyChanged.promise,
            sleep(BUSY_LOOK_EVERY_MS, undefined, { signal: timeout.signal }).catch(() => undefined)]);
          timeout.abort();
          continue;
        }
        const id = deployment.id;
        this.#markedSince.delete(id);
        this.#lanes.started(id);
        const batch = this.#handleOne(deployment);
        inFlight.add(batch);
        const claimed = await batch.finally(() => {
          inFlight.delete(batch);
          this.#lanes.finished(id);
        });
        this.#claimedSince += claimed;
        if (claimed > 0) {
          found = true;
          this.#activeUntil.set(id, performance.now() + LINGER_MS);
          empty.delete(id);
        } else if (!this.#health.isResting(id) && !this.#markedSince.has(id)) {
          // Empty (or rows another lane or worker holds: that batch keeps it marked).
          empty.add(id);
        }
      }
    };
    await Promise.all(Array.from({ length: this.#settings.concurrency }, lane));
    await this.#looking;
    this.#forgetQuiet(empty);
    return found;
  }

  /** Unmarks the deployments found empty whose live traffic stopped LINGER_MS ago. */
  #forgetQuiet(empty: Iterable<number>): void {
    const now = performance.now();
    for (const id of empty) {
      if (this.#markedSince.has(id)) continue;
      if ((this.#activeUntil.get(id) ?? 0) > now) continue;
      this.#activeUntil.delete(id);
      this.#dirty.delete(id);
    }
  }

  async #handleOne(deployment: ActiveDeployment): Promise<number> {
    try {
      const started = performance.now();
      const result = await this.#handler.handle(deployment, this.#lanes.batchSize(deployment.id, this.#settings.batchSize));
      this.#errorBackoffMs = 0;
      this.#health.succeeded(deployment.id);
      if (result.claimed > 0) {
        this.#log.debug(result, 'batch done');
        this.emit('batch', result);
        this.#lanes.observe(deployment.id, result, started);
      }
      if (result.requeued > 0) this.#requeuedAt.set(deployment.id, performance.now() + REQUEUED_LOOK_AFTER_MS);
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
    if (status === 'busy') {
      this.#log.info({ deployment: deployment.name }, 'could not re-check the deployment: a DBA call or DDL holds it; the next reload checks it');
    } else if (status !== undefined && status !== 'active') {
      this.#log.warn({ deployment: deployment.name, status }, `deployment is ${status} now`);
    }
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

  /**
   * Out of work: sleep as a worker writers wake, or poll while writers still see us busy. Once
   * the idle lock is held, no writer that saw the worker busy is in flight: the queue heads that
   * moved since the last look under the lock name every queue those writers filled.
   */
  async #idle(): Promise<void> {
    await this.#releasing;
    await this.#looking;
    if (await this.#wakeup.tryHoldIdleLock()) {
      this.#idleBackoffMs = 0;
      const heads = await this.#wakeup.queueHeads();
      if (heads) {
        this.#markMoved(heads, this.#lockedHeads);
        this.#lockedHeads = heads;
        this.#busyHeads = heads;
        this.#busyHeadsBefore = heads;
      } else {
        this.#safetyDue = true;
      }
      if (this.#safetyDue) await this.#safetyPoll();
      if (this.#pickable().length === 0) {
        const wait = this.#nextRequeuedLook(this.#settings.pollIntervalMs);
        const woke = await this.#waitForWake(wait);
        if (performance.now() - this.#safetyAt > SAFETY_POLL_EVERY_POLLS * this.#settings.pollIntervalMs) this.#safetyDue = true;
        if (woke && this.#settings.maxWaitMs > 0 && !this.#stopping) await sleep(this.#settings.maxWaitMs);
        const now = performance.now();
        for (const [id, at] of this.#requeuedAt) {
          if (at <= now) {
            this.#requeuedAt.delete(id);
            this.#markDirty(id);
          }
        }
        // After a timeout (or a NOTIFY), the next drain starts with a look at the heads: rows
        // whose NOTIFY was lost (or never sent) are found by the poll, as before.
        if (!woke) {
          const later = await this.#wakeup.queueHeads();
          if (later) {
            this.#markMoved(later, this.#lockedHeads);
            this.#lockedHeads = later;
            this.#busyHeads = later;
            this.#busyHeadsBefore = later;
          }
        }
      }
      this.#releasing = this.#wakeup.releaseIdleLock();
    } else {
      // Writers that saw this worker busy are about to commit rows (and send no NOTIFY): look
      // again soon. The retry delay resets only once this worker gets the idle lock.
      const cap = this.#arrivingFast(performance.now()) ? MAX_BUSY_RETRY_MS : MAX_IDLE_RETRY_MS;
      this.#idleBackoffMs = Math.min(cap, Math.max(1, this.#idleBackoffMs * 2));
      await this.#waitForWake(this.#idleBackoffMs);
      this.#lookWhileBusy();
    }
  }

  /** How long to sleep: the poll interval, or less when requeued rows come due sooner. */
  #nextRequeuedLook(ms: number): number {
    const now = performance.now();
    let wait = ms;
    for (const at of this.#requeuedAt.values()) wait = Math.min(wait, Math.max(1, at - now));
    const cooled = this.#lanes.coolingEnds(this.#dirty, now);
    if (cooled !== Infinity) wait = Math.min(wait, Math.max(1, cooled - now));
    return wait;
  }

  /**
   * Rows are due (the safety poll found them) that no look had found: their NOTIFY was lost,
   * another worker holds them, or a deployment was re-planned (a claim takes nothing from a
   * stale plan) and its NOTIFY was missed. Reload, at most every STALE_CHECK_EVERY_MS.
   */
  #dirtyIsStale(): boolean {
    if (Date.now() - this.#staleCheckAt <= STALE_CHECK_EVERY_MS) return false;
    this.#staleCheckAt = Date.now();
    return true;
  }
}
