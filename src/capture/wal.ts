import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { LogicalReplicationService, PgoutputPlugin, type Pgoutput } from 'pg-logical-replication';
import { describe } from '../errors.js';
import type { Logger } from '../log.js';
import type { DeploymentRow } from '../db/statements.js';
import { CaptureBuffer, type CapturedRow } from './buffer.js';

/** A buffer this full is queued at once (ml._capture), without waiting FLUSH_AFTER_MS. */
const FLUSH_ROWS = 20_000;
/** How long the first key of a buffer waits for more before the buffer is queued. */
const FLUSH_AFTER_MS = 1;
const RETRY_MS = 2_000;

/**
 * Capture from the WAL (deploy option "capture": "wal", sql/functions/032_capture.sql): reads
 * the publication "pgscore" from this database's replication slot and queues the keys of every
 * committed transaction (ml._capture), skipping pgscore's own write-backs (they carry a logical
 * message, src/writeback/sql.ts). The slot's confirmed position moves only past transactions
 * whose keys are queued: a crash replays the rest, and queueing a key twice scores it twice at
 * most (the write-back is idempotent). One process streams at a time (a slot has one reader);
 * others wait for it. With no WAL-captured deployment, the slot is dropped: it would keep WAL.
 * The replication protocol is pg-logical-replication's; this file only maps its messages.
 */
export class WalCapture {
  readonly #pool: pg.Pool;
  readonly #connectionString: string;
  readonly #log: Logger;
  #running: Promise<void> | undefined;
  /** Whether the stream should run (deployments capture from the WAL, and not stopping). */
  #wanted = false;
  #service: LogicalReplicationService | undefined;
  /**
   * Streams whose keys could not be queued: they must confirm nothing more (their buffer was
   * taken and lost), only end, so that the next stream reads those transactions again.
   */
  readonly #failed = new WeakSet<LogicalReplicationService>();
  #stopped = false;
  #buffer = new CaptureBuffer();
  #flushing: Promise<void> | undefined;
  #flushTimer: NodeJS.Timeout | undefined;
  /** The end of the last transaction whose keys are queued (or that had none): what the slot may confirm. */
  #confirmed: string | undefined;

  constructor(connectionString: string, pool: pg.Pool, log: Logger) {
    this.#connectionString = connectionString;
    this.#pool = pool;
    this.#log = log.child({ component: 'capture' });
  }

  /**
   * The active deployments, after every reload: starts or stops the stream, and drops the slot
   * when none captures from the WAL. Which deployments a table's rows go to is decided by
   * ml._capture when they are queued, so a deployment made a moment ago loses nothing.
   */
  async update(deployments: readonly DeploymentRow[]): Promise<void> {
    const wanted = deployments.some((d) => d.plan.capture === 'wal');
    if (wanted && !this.#running && !this.#stopped) {
      this.#wanted = true;
      this.#running = this.#run();
    } else if (!wanted && this.#running) {
      await this.#halt();
      await this.#dropSlot();
    } else if (!wanted) {
      await this.#dropSlot();
    }
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    await this.#halt();
  }

  async #halt(): Promise<void> {
    this.#wanted = false;
    const running = this.#running;
    this.#running = undefined;
    const service = this.#service;
    this.#service = undefined;
    await service?.stop().catch(() => undefined);
    await running;
    clearTimeout(this.#flushTimer);
    this.#flushTimer = undefined;
    await this.#flushing;
  }

  /** Streams until stopped; a failed stream is started again (from the slot's confirmed position). */
  async #run(): Promise<void> {
    let quietUntil = 0;
    while (this.#wanted) {
      try {
        await this.#stream();
      } catch (error) {
        if (!this.#wanted) return;
        const message = describe(error);
        if (/replication slot "[^"]+" is active/.test(message)) {
          // Another worker streams: it queues the keys. Look again later, and say so once a minute.
          if (Date.now() > quietUntil) this.#log.info('another worker reads the WAL; this one waits for its slot');
          quietUntil = Date.now() + 60_000;
        } else if (await this.#slotLost()) {
          // max_slot_wal_keep_size removed WAL the slot needed: changes since are lost to it.
          this.#log.warn({ reason: message }, 'the replication slot lost WAL it needed; it is created again and the captured tables backfilled');
          await this.#dropSlot();
        } else {
          this.#log.warn({ reason: message }, 'reading the WAL failed; trying again');
        }
      }
      this.#buffer = new CaptureBuffer();
      this.#confirmed = undefined;
      if (this.#wanted) await sleep(RETRY_MS);
    }
  }

  async #stream(): Promise<void> {
    const slot = await this.#ensureSlot();
    const service = new LogicalReplicationService(
      { connectionString: this.#connectionString, application_name: 'pgscore capture' },
      // Acknowledged by hand, only past queued transactions. Messages arrive in order, heartbeats
      // among them, and are handled as they arrive (the buffer grows while a flush runs).
      { acknowledge: { auto: false, timeoutSeconds: 0 } },
    );
    this.#service = service;
    // #halt may have run while the slot was looked up (it had no stream to stop then), or run
    // now, before the stream has started (a stop before the start does not keep it from
    // starting): a stream no longer wanted ends as soon as it starts.
    if (!this.#wanted) return;
    service.on('start', () => {
      if (!this.#wanted || this.#service !== service) void service.stop();
    });
    let open: { skip: boolean; rows: Map<number, CapturedRow[]> } | undefined;
    service.on('data', (_lsn: string, message: Pgoutput.Message) => {
      switch (message.tag) {
        case 'relation':
          // Keys as Postgres prints them: ml._capture casts them back with the key's own type.
          for (const column of message.columns) column.parser = (raw: unknown) => raw;
          return;
        case 'begin':
          open = { skip: false, rows: new Map() };
          return;
        case 'message':
          if (message.prefix === 'pgscore' && open) open.skip = true;
          return;
        case 'insert':
        case 'update': {
          if (!open) return;
          const table = message.relation.relationOid;
          const rows = open.rows.get(table) ?? [];
          rows.push(message.new as CapturedRow);
          open.rows.set(table, rows);
          return;
        }
        case 'commit': {
          const end = message.commitEndLsn ?? undefined;
          if (open && !open.skip) this.#buffer.add(open.rows);
          open = undefined;
          if (end) this.#buffer.through(end);
          this.#scheduleFlush(this.#buffer.rows >= FLUSH_ROWS ? 0 : FLUSH_AFTER_MS);
          return;
        }
        default:
          return;
      }
    });
    let acknowledged: string | undefined;
    service.on('heartbeat', async (lsn: string, _time: number, shouldRespond: boolean) => {
      if (this.#failed.has(service)) return;
      // Nothing waits to be queued: the server's position is safe to confirm (WAL of other
      // tables, or none). An idle server sends this when the slot's position is behind: confirming
      // it lets the server free that WAL, and shows the capture caught up.
      if (!open && this.#buffer.empty && !this.#flushing) this.#confirmed = maxLsn(this.#confirmed, lsn);
      if (this.#confirmed && (shouldRespond || this.#confirmed !== acknowledged)) {
        acknowledged = this.#confirmed;
        await service.acknowledge(this.#confirmed);
      }
    });
    service.on('error', (error: Error) => this.#log.debug({ err: error }, 'replication connection error'));
    await service.subscribe(new PgoutputPlugin({ protoVersion: 1, publicationNames: ['pgscore'], messages: true }), slot);
    if (this.#wanted) throw new Error('the replication stream ended');
  }

  #scheduleFlush(ms: number): void {
    if (this.#flushTimer || (this.#buffer.empty && !this.#buffer.lsn)) return;
    this.#flushTimer = setTimeout(() => {
      this.#flushTimer = undefined;
      void this.#flush().catch((error: unknown) => this.#log.warn({ reason: describe(error) }, 'queueing captured rows failed; the stream restarts'));
    }, ms);
  }

  /** Queues the buffer's keys in one transaction, then confirms the WAL position they came through. */
  async #flush(): Promise<void> {
    while (this.#flushing) await this.#flushing.catch(() => undefined);
    const buffer = this.#buffer;
    if (buffer.empty && !buffer.lsn) return;
    this.#buffer = new CaptureBuffer();
    const service = this.#service;
    const run = async () => {
      try {
        if (!buffer.empty) await this.#pool.query('SELECT ml._capture($1::jsonb)', [JSON.stringify(buffer.toJson())]);
        if (service && this.#failed.has(service)) return;
        if (buffer.lsn) this.#confirmed = maxLsn(this.#confirmed, buffer.lsn);
        if (this.#confirmed) await service?.acknowledge(this.#confirmed);
      } catch (error) {
        // Not confirmed: the stream starts again from the slot's position and reads these once more.
        if (service) this.#failed.add(service);
        void service?.stop().catch(() => undefined);
        throw error;
      }
    };
    // Cleared in a callback, which runs after the assignment even when run() ends at once: cleared
    // inside run(), a flush with nothing to wait for left a settled promise here for good.
    const flushing: Promise<void> = run().finally(() => {
      if (this.#flushing === flushing) this.#flushing = undefined;
    });
    this.#flushing = flushing;
    await flushing;
    // Keys that came in meanwhile.
    this.#scheduleFlush(this.#buffer.rows >= FLUSH_ROWS ? 0 : FLUSH_AFTER_MS);
  }

  /** The slot's name, creating it (and backfilling the captured tables, whose earlier changes it never saw) when missing. */
  async #ensureSlot(): Promise<string> {
    const { rows } = await this.#pool.query<{ slot: string; exists: boolean }>(
      'SELECT s AS slot, EXISTS (SELECT 1 FROM pg_catalog.pg_replication_slots r WHERE r.slot_name = s) AS exists FROM ml._capture_slot() s');
    const { slot, exists } = rows[0]!;
    if (!exists) {
      // The backfill commits before the slot confirms anything past its start (the stream starts
      // after it): once the slot is past a position, so is every row written before it.
      const client = await this.#pool.connect();
      try {
        await client.query('BEGIN');
        await client.query("SELECT pg_catalog.pg_create_logical_replication_slot($1, 'pgoutput')", [slot]);
        const { rows: started } = await client.query<{ n: number }>('SELECT ml._capture_started() AS n');
        await client.query('COMMIT');
        this.#log.info({ slot, backfilled: started[0]?.n }, 'replication slot created; the captured tables are backfilled once');
      } catch (error) {
        await client.query('ROLLBACK').catch(() => undefined);
        // A slot without its backfill would miss the rows written before it: drop it, try again.
        await this.#dropSlot();
        throw error;
      } finally {
        client.release();
      }
    }
    return slot;
  }

  /**
   * Whether the slot lost WAL it needed (wal_status 'lost'): Postgres words the error differently
   * in each major ("can no longer get changes from …", "can no longer access …"), the slot's
   * state is the same.
   */
  async #slotLost(): Promise<boolean> {
    try {
      const { rows } = await this.#pool.query<{ lost: boolean }>(
        "SELECT wal_status = 'lost' AS lost FROM pg_catalog.pg_replication_slots WHERE slot_name = ml._capture_slot()");
      return rows[0]?.lost === true;
    } catch {
      return false;
    }
  }

  /** Drops the slot when no process reads it. */
  async #dropSlot(): Promise<void> {
    try {
      await this.#pool.query(
        `SELECT pg_catalog.pg_drop_replication_slot(r.slot_name) FROM pg_catalog.pg_replication_slots r
          WHERE r.slot_name = ml._capture_slot() AND NOT r.active`);
    } catch (error) {
      this.#log.debug({ reason: describe(error) }, 'the replication slot could not be dropped');
    }
  }
}

/** The later of two LSNs ('16/B374D848'). */
export function maxLsn(a: string | undefined, b: string): string {
  if (!a) return b;
  return lsnValue(a) >= lsnValue(b) ? a : b;
}

function lsnValue(lsn: string): bigint {
  const [hi, lo] = lsn.split('/');
  return (BigInt(`0x${hi}`) << 32n) + BigInt(`0x${lo}`);
}
