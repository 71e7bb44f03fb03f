import pgListen, { type Subscriber } from 'pg-listen';
import type pg from 'pg';
import type { Patiently } from '../db/patience.js';
import { createClient } from '../db/pool.js';
import { QUEUE_HEADS, RELEASE_IDLE_LOCK, TRY_IDLE_LOCK } from '../db/statements.js';
import type { Logger } from '../log.js';

export const WAKE_CHANNEL = 'pgscore_wake';
export const CONFIG_CHANNEL = 'pgscore_config';

export interface NotifyHandlers {
  /**
   * Rows were queued while this worker slept: the payload names the deployment (its id), or is
   * empty (any deployment). Any role may NOTIFY: the payload only says where to look.
   */
  onWake(deployment: number | undefined): void;
  /** Models, aliases or deployments changed. */
  onConfig(): void;
  /** The listening connection came back; notifications may have been missed. */
  onReconnect(): void;
}

/** Queue heads by deployment id (ml._queue_heads): the last number each queue handed out. */
export type QueueHeads = Map<number, string | null>;

interface HeadRow {
  readonly deployment_id: number;
  readonly head: string | null;
}

const headsOf = (rows: readonly HeadRow[]): QueueHeads => new Map(rows.map((row) => [row.deployment_id, row.head]));

/**
 * The notify transport's wake-up: LISTEN (through pg-listen, which reconnects and re-LISTENs)
 * plus the idle lock. NOTIFY only wakes; the queue tables are the truth, and the worker polls too.
 *
 * Writers skip NOTIFY while no worker holds the idle lock (ml._wake_worker in
 * sql/functions/027_locks.sql), so a busy worker is never notified. A worker takes the lock
 * (SHARE on ml._wake, which only pgscore's roles can lock) when it runs out of work; it gets it
 * only once every writer that saw it busy has committed, then it reads the queue heads to find
 * the queues those writers filled (on the worker's pool: reading a sequence would hold it in the
 * lock's transaction). The lock's connection reads the heads while the worker is busy, outside
 * the lock's transaction.
 */
export class NotifyWakeup {
  readonly #handlers: NotifyHandlers;
  #subscriber: Subscriber;
  #lockClient: pg.Client | undefined;
  #holding = false;
  /** The lock's connection runs one thing at a time: the lock, its release, a look at the heads. */
  #turn: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly connectionString: string,
    private readonly log: Logger,
    handlers: NotifyHandlers,
    /** The worker's pool: where the heads are read while the lock is held. */
    private readonly pool: pg.Pool,
  ) {
    this.#handlers = handlers;
    this.#subscriber = this.#newSubscriber();
  }

  #newSubscriber(): Subscriber {
    const { log, handlers } = { log: this.log, handlers: this.#handlers };
    const connectionString = this.connectionString;
    // pg-listen is CommonJS with its factory on `default`.
    const subscriber = pgListen.default(
      { connectionString, application_name: 'pgscore listener' },
      {
        parse: (payload: string) => payload,
        paranoidChecking: 10_000,
        retryTimeout: Number.POSITIVE_INFINITY,
        retryInterval: (attempt: number) => Math.min(5000, 100 * 2 ** attempt) * (0.5 + Math.random() / 2),
      },
    );
    subscriber.notifications.on(WAKE_CHANNEL, (payload: unknown) => {
      const text = typeof payload === 'string' ? payload : '';
      if (text === '') handlers.onWake(undefined);
      else if (/^[1-9][0-9]{0,9}$/.test(text)) handlers.onWake(Number(text));
      // Anything else is no pgscore wake-up: ignored.
    });
    subscriber.notifications.on(CONFIG_CHANNEL, () => handlers.onConfig());
    subscriber.events.on('reconnect', (attempt: number) => log.warn({ attempt }, 'listener reconnecting'));
    let connectedOnce = false;
    subscriber.events.on('connected', () => {
      if (connectedOnce) {
        log.info('listener reconnected; sweeping the queues');
        handlers.onReconnect();
      }
      connectedOnce = true;
    });
    subscriber.events.on('error', (error: Error) => log.error({ err: error }, 'listener failed'));
    return subscriber;
  }

  /** Connects the listener; a failed connection is replaced by a new one before the next try. */
  async start(patiently: Patiently): Promise<void> {
    await patiently(async () => {
      try {
        await this.#subscriber.connect();
        await this.#subscriber.listenTo(WAKE_CHANNEL);
        await this.#subscriber.listenTo(CONFIG_CHANNEL);
      } catch (error) {
        await this.#subscriber.close().catch(() => undefined);
        this.#subscriber = this.#newSubscriber();
        throw error;
      }
    });
  }

  /** Tries to become a worker that writers wake. False while writers that saw it busy are in flight. */
  tryHoldIdleLock(): Promise<boolean> {
    return this.#inTurn(() => this.#tryHoldIdleLock());
  }

  releaseIdleLock(): Promise<void> {
    return this.#inTurn(() => this.#releaseIdleLock());
  }

  /**
   * Every queue's head, on the lock's connection (inside the lock's transaction while it is
   * held, so a sleeping worker commits nothing more). Undefined when the connection failed.
   */
  queueHeads(): Promise<QueueHeads | undefined> {
    return this.#inTurn(() => this.#queueHeads());
  }

  /** The lock's connection runs one thing at a time, in the order asked. */
  #inTurn<T>(body: () => Promise<T>): Promise<T> {
    const result = this.#turn.then(body);
    this.#turn = result.catch(() => undefined);
    return result;
  }

  async #tryHoldIdleLock(): Promise<boolean> {
    if (this.#holding) return true;
    let client: pg.Client;
    try {
      client = await this.#client();
    } catch (error) {
      this.#dropClient(error);
      return false;
    }
    try {
      await client.query(TRY_IDLE_LOCK);
      this.#holding = true;
      return true;
    } catch (error) {
      await client.query('ROLLBACK').catch(() => undefined);
      if ((error as { code?: string }).code === '55P03') return false;
      this.#dropClient(error);
      return false;
    }
  }

  async #releaseIdleLock(): Promise<void> {
    if (!this.#holding) return;
    this.#holding = false;
    try {
      await this.#lockClient?.query(RELEASE_IDLE_LOCK);
    } catch (error) {
      // The lock went with the connection.
      this.#dropClient(error);
    }
  }

  async #queueHeads(): Promise<QueueHeads | undefined> {
    // Reading a sequence locks it to the end of the transaction (even inside a savepoint that
    // rolls back). Inside the lock's transaction that held every queue's sequence while the
    // worker slept: ml.undeploy, holding a queue, waited for its sequence, the worker's safety
    // poll for the queue, and neither ever ended (the generated suite: 19 minutes). While the
    // lock is held, the heads are read on the worker's pool, idle then, in a statement of their
    // own; it still sees every row committed before the lock was taken.
    if (this.#holding) {
      try {
        return headsOf((await this.pool.query<HeadRow>(QUEUE_HEADS)).rows);
      } catch (error) {
        this.log.warn({ err: error }, 'could not read the queue heads');
        return undefined;
      }
    }
    try {
      const client = await this.#client();
      return headsOf((await client.query<HeadRow>(QUEUE_HEADS)).rows);
    } catch (error) {
      this.#dropClient(error);
      return undefined;
    }
  }

  async stop(): Promise<void> {
    await this.releaseIdleLock();
    await this.#turn;
    await this.#lockClient?.end().catch(() => undefined);
    this.#lockClient = undefined;
    await this.#subscriber.close().catch(() => undefined);
  }

  async #client(): Promise<pg.Client> {
    if (this.#lockClient) return this.#lockClient;
    const client = createClient(this.connectionString, 'idle lock');
    client.on('error', (error) => this.#dropClient(error));
    await client.connect();
    // The lock is held in an open transaction while the worker sleeps (up to the poll interval).
    await client.query('SET idle_in_transaction_session_timeout = 0');
    this.#lockClient = client;
    return client;
  }

  #dropClient(error: unknown): void {
    this.log.warn({ err: error }, 'idle-lock connection lost');
    const client = this.#lockClient;
    this.#lockClient = undefined;
    this.#holding = false;
    client?.end().catch(() => undefined);
  }
}
