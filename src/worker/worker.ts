import { EventEmitter } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import type pg from 'pg';
import type { Config } from '../config.js';
import { createPool } from '../db/pool.js';
import { fetchModelBytes, TRIM_BATCH_STATS } from '../db/statements.js';
import { describe, isConnectionError, ModelError } from '../errors.js';
import type { Logger } from '../log.js';
import { SessionCache } from '../models/sessions.js';
import { NotifyWakeup } from '../transport/notify.js';
import { runBatch, type BatchResult } from './batch.js';
import { loadDeployments, type ActiveDeployment } from './deployments.js';

export interface WorkerEvents {
  batch: [BatchResult];
  ready: [];
}

type WorkerSettings = Pick<
  Config,
  'batchSize' | 'maxWaitMs' | 'pollIntervalMs' | 'concurrency' | 'ortThreads'
>;

/** Promise.withResolvers, which Node 20 lacks. */
function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

const RELOAD_EVERY_MS = 30_000;
const MAX_ERROR_BACKOFF_MS = 5_000;

/**
 * `pgscore worker` with the notify transport. Lanes (PGSCORE_CONCURRENCY of them, each with its
 * own connection) claim and score batches until every queue is empty, so one batch is scored
 * while another is read or written. Then the worker sleeps until a NOTIFY, a reconnect, a
 * configuration change or the poll interval wakes it.
 */
export class Worker extends EventEmitter<WorkerEvents> {
  readonly #settings: WorkerSettings;
  readonly #log: Logger;
  readonly #pool: pg.Pool;
  readonly #models: SessionCache;
  readonly #wakeup: NotifyWakeup;
  #deployments: ActiveDeployment[] = [];
  /** Deployments whose model does not load, with the reason; retried after the next reload. */
  #broken = new Map<number, string>();
  #cursor = 0;
  #stopping = false;
  #reloadDue = true;
  #errorBackoffMs = 0;
  #idleBackoffMs = 0;
  #signal = deferred();
  #loop: Promise<void> | undefined;
  #timers: NodeJS.Timeout[] = [];
  #releasing: Promise<void> = Promise.resolve();

  constructor(connectionString: string, settings: WorkerSettings, log: Logger) {
    super();
    this.#settings = settings;
    this.#log = log;
    this.#pool = createPool(connectionString, { max: settings.concurrency + 1, name: 'worker' });
    this.#pool.on('error', (error) => log.warn({ err: error }, 'idle pooled connection lost'));
    this.#models = new SessionCache((name, version) => fetchModelBytes(this.#pool, name, version), {
      threads: settings.ortThreads,
    });
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
    this.#timers.push(
      setInterval(() => {
        this.#reloadDue = true;
      }, RELOAD_EVERY_MS),
      setInterval(() => {
        this.#pool.query(TRIM_BATCH_STATS).catch((error) => this.#log.warn({ err: error }, 'could not trim statistics'));
      }, 60_000),
    );
    this.#loop = this.#run();
    this.emit('ready');
  }

  /** Finishes the batches in flight, then closes every connection. */
  async stop(): Promise<void> {
    this.#stopping = true;
    this.#wake();
    for (const timer of this.#timers) clearInterval(timer);
    await this.#loop;
    await this.#releasing;
    await this.#wakeup.stop();
    await this.#models.close();
    await this.#pool.end();
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
        if (!found) await this.#idle();
      } catch (error) {
        await this.#backOff(error, 'worker loop failed');
      }
    }
  }

  async #reload(): Promise<void> {
    this.#reloadDue = false;
    try {
      this.#deployments = await loadDeployments(this.#pool, this.#models, this.#log);
      this.#broken.clear();
      this.#log.debug({ deployments: this.#deployments.map((d) => d.name) }, 'deployments loaded');
    } catch (error) {
      this.#reloadDue = true;
      throw error;
    }
  }

  #nextDeployment(): ActiveDeployment | undefined {
    const live = this.#deployments.filter((d) => !this.#broken.has(d.id));
    if (live.length === 0) return undefined;
    this.#cursor = (this.#cursor + 1) % live.length;
    return live[this.#cursor];
  }

  /** Runs lanes until every deployment's queue came back empty; true if any row was claimed. */
  async #drain(): Promise<boolean> {
    let found = false;
    const lane = async () => {
      let emptyInARow = 0;
      while (!this.#stopping && !this.#reloadDue) {
        const deployment = this.#nextDeployment();
        if (!deployment || emptyInARow >= this.#deployments.length) return;
        const claimed = await this.#scoreOne(deployment);
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

  async #scoreOne(deployment: ActiveDeployment): Promise<number> {
    let model;
    try {
      model = await this.#models.get(deployment.model, deployment.version);
    } catch (error) {
      if (!(error instanceof ModelError)) throw error;
      this.#broken.set(deployment.id, error.message);
      this.#log.error({ deployment: deployment.name, model: deployment.modelRef, err: error }, 'model does not load; deployment paused');
      return 0;
    }
    try {
      const result = await runBatch(this.#pool, deployment, model, this.#settings.batchSize);
      this.#errorBackoffMs = 0;
      if (result.claimed > 0) {
        this.#log.debug(result, 'batch scored');
        this.emit('batch', result);
      }
      return result.claimed;
    } catch (error) {
      await this.#backOff(error, 'batch failed; its rows stay queued', deployment.name);
      return 0;
    }
  }

  async #backOff(error: unknown, message: string, deployment?: string): Promise<void> {
    this.#errorBackoffMs = Math.min(MAX_ERROR_BACKOFF_MS, Math.max(100, this.#errorBackoffMs * 2));
    const level = isConnectionError(error) ? 'warn' : 'error';
    this.#log[level]({ deployment, err: error, retryInMs: this.#errorBackoffMs }, `${message}: ${describe(error)}`);
    await this.#waitForWake(this.#errorBackoffMs * (0.5 + Math.random() / 2));
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
      }
      this.#releasing = this.#wakeup.releaseIdleLock();
    } else {
      this.#idleBackoffMs = Math.min(this.#settings.pollIntervalMs, Math.max(1, this.#idleBackoffMs * 2));
      await this.#waitForWake(this.#idleBackoffMs);
    }
  }

  async #anyPending(): Promise<boolean> {
    const live = this.#deployments.filter((d) => !this.#broken.has(d.id));
    if (live.length === 0) return false;
    const { rows } = await this.#pool.query<{ pending: boolean }>(
      `SELECT ${live.map((d) => `(${d.sql.pending})`).join(' OR ')} AS pending`,
    );
    return rows[0]?.pending === true;
  }
}
