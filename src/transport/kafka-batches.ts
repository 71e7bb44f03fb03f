import type { EachBatchPayload, KafkaMessage } from 'kafkajs';

/** Consecutive messages of one partition, handled in one transaction with others. */
export interface Slice {
  readonly topic: string;
  readonly partition: number;
  readonly messages: readonly KafkaMessage[];
}

export interface ChunkSettings {
  /** Rows per transaction (PGSCORE_BATCH_SIZE); a chunk holds at least one message. */
  readonly rowsPerChunk: number;
  /** Transactions in flight at once (PGSCORE_CONCURRENCY). */
  readonly lanes: number;
  /** Rows a message carries, read cheaply (from its header). */
  rowsIn(message: KafkaMessage): number;
}

interface Entry {
  readonly payload: EachBatchPayload;
  /** The first message not yet handled. */
  next: number;
  busy: boolean;
  settle(error?: unknown): void;
}

/**
 * Turns kafkajs's batches (one per partition of a fetch, handed over at once: run the consumer
 * with partitionsConsumedConcurrently at least the partition count) into chunks of up to
 * rowsPerChunk rows taken across partitions, so a trickle spread over twelve partitions is one
 * transaction instead of twelve, and a backlog is cut into full chunks.
 *
 * A partition's messages are handled in order, one chunk at a time; after a chunk commits, each
 * of its partitions' offsets is resolved up to its last message, and a partition's batch (its
 * eachBatch call) returns once all its messages are handled, so kafkajs commits the offsets and
 * fetches on from there. A chunk that fails rejects the eachBatch calls of its partitions: their
 * unresolved messages are fetched again. A partition taken away by a rebalance is dropped before
 * its next chunk (it is redelivered to its new owner).
 */
export class ChunkScheduler {
  readonly #entries: Entry[] = [];
  readonly #settings: ChunkSettings;
  readonly #handle: (slices: Slice[]) => Promise<void>;
  #lanes = 0;
  #scheduled = false;
  /** A heartbeat failed (a rebalance): every batch not yet handled ends with it. */
  #abort: unknown;

  constructor(settings: ChunkSettings, handle: (slices: Slice[]) => Promise<void>) {
    this.#settings = settings;
    this.#handle = handle;
  }

  /** kafkajs's eachBatch (with eachBatchAutoResolve false). */
  eachBatch(payload: EachBatchPayload): Promise<void> {
    if (payload.batch.messages.length === 0) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      this.#entries.push({
        payload,
        next: 0,
        busy: false,
        settle: (error) => (error === undefined ? resolve() : reject(error)),
      });
      this.#abort = undefined;
      this.#schedule();
    });
  }

  /** Lanes start on the next turn of the event loop, once every batch of a fetch has arrived. */
  #schedule(): void {
    if (this.#scheduled) return;
    this.#scheduled = true;
    setImmediate(() => {
      this.#scheduled = false;
      while (this.#lanes < this.#settings.lanes && this.#entries.some((entry) => !entry.busy)) {
        this.#lanes += 1;
        void this.#lane().finally(() => {
          this.#lanes -= 1;
          if (this.#entries.some((entry) => !entry.busy)) this.#schedule();
        });
      }
    });
  }

  async #lane(): Promise<void> {
    for (let taken = this.#take(); taken; taken = this.#take()) {
      const slices = taken.map(({ entry, end }) => ({
        topic: entry.payload.batch.topic,
        partition: entry.payload.batch.partition,
        messages: entry.payload.batch.messages.slice(entry.next, end),
      }));
      try {
        await this.#handle(slices);
      } catch (error) {
        for (const { entry } of taken) this.#finish(entry, error);
        continue;
      }
      for (const { entry, end } of taken) {
        const { messages } = entry.payload.batch;
        entry.payload.resolveOffset(messages[end - 1]!.offset);
        entry.next = end;
        entry.busy = false;
        if (end === messages.length) this.#finish(entry);
      }
      try {
        // One offset commit for the chunk's partitions (kafkajs would send one per partition's
        // batch as each returns; after this one, theirs find nothing left to commit).
        const { payload } = taken[0]!.entry;
        await payload.commitOffsetsIfNecessary(payload.uncommittedOffsets());
        await payload.heartbeat();
      } catch (error) {
        // A rebalance: the handled chunk's offsets may not be committed (it is redelivered).
        this.#abort = error;
      }
    }
  }

  /**
   * The next chunk: messages of idle partitions, oldest batches first, up to rowsPerChunk rows,
   * taken a message per partition in turn, so a chunk holds rows the relay claimed together (rows
   * written back together share pages). When more rows wait than one chunk takes, a chunk takes
   * only its lane's share of the partitions, leaving the rest to the other lanes.
   */
  #take(): { entry: Entry; end: number }[] | undefined {
    const idle: Entry[] = [];
    let waiting = 0;
    for (const entry of [...this.#entries]) {
      if (entry.busy) continue;
      if (this.#abort !== undefined) {
        this.#finish(entry, this.#abort);
      } else if (!entry.payload.isRunning() || entry.payload.isStale()) {
        // Stopping, or the partition was taken away: its unresolved messages are fetched again.
        this.#finish(entry);
      } else {
        idle.push(entry);
        const { messages } = entry.payload.batch;
        for (let i = entry.next; i < messages.length && waiting <= this.#settings.rowsPerChunk; i++) waiting += this.#settings.rowsIn(messages[i]!);
      }
    }
    if (idle.length === 0) return undefined;
    const share = waiting > this.#settings.rowsPerChunk ? Math.ceil(this.#entries.length / this.#settings.lanes) : idle.length;
    const picked = idle.slice(0, Math.max(1, share));
    const ends = picked.map((entry) => entry.next);
    let rows = 0;
    for (let more = true; more && rows < this.#settings.rowsPerChunk; ) {
      more = false;
      for (let i = 0; i < picked.length && rows < this.#settings.rowsPerChunk; i++) {
        const { messages } = picked[i]!.payload.batch;
        if (ends[i]! >= messages.length) continue;
        rows += this.#settings.rowsIn(messages[ends[i]!]!);
        ends[i]! += 1;
        more = true;
      }
    }
    const taken = picked.flatMap((entry, i) => (ends[i]! > entry.next ? [{ entry, end: ends[i]! }] : []));
    for (const { entry } of taken) entry.busy = true;
    return taken;
  }

  #finish(entry: Entry, error?: unknown): void {
    const at = this.#entries.indexOf(entry);
    if (at >= 0) this.#entries.splice(at, 1);
    entry.settle(error);
  }
}
