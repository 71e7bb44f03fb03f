import type { EachBatchPayload, KafkaMessage } from 'kafkajs';

/**
 * Offsets are committed at most this often: a commit is a request to the broker and a write to
 * its offsets topic, for nothing but a restart or a rebalance (which then redeliver at most this
 * much more, harmlessly).
 */
const COMMIT_EVERY_MS = 50;
/**
 * A commit that failed (the broker restarting, its coordinator moving) is tried again after this
 * long: kafkajs fetches on from the offsets it resolved, so nothing else would ever commit a
 * partition that gets no new message (the generated suite's K1: ml.status.in_kafka counted its
 * rows in Kafka for good, and a restart redelivered them).
 */
const COMMIT_RETRY_MS = 1_000;

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
  /** An offset commit failed (its messages are redelivered after a restart or a rebalance). */
  onCommitFailure(error: unknown): void;
  /** The group committed these offsets (the next message to read of each partition). */
  onCommitted(topics: readonly CommittedOffsets[]): void;
}

export interface CommittedOffsets {
  readonly topic: string;
  readonly partitions: readonly { readonly partition: number; readonly offset: string }[];
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
 * A partition's messages are handled in order, one chunk at a time; after a chunk's transaction
 * commits, each of its partitions' offsets is resolved up to its last message (kafkajs fetches on
 * from there) and committed to the group without holding up the next fetch: one request at a
 * time, at most every COMMIT_EVERY_MS, carrying every chunk's offsets since the last (run the
 * consumer with autoCommit off; kafkajs would commit once per partition batch). A
 * partition's batch (its eachBatch call) returns once all its messages are handled. A chunk that
 * fails rejects the eachBatch calls of its partitions: their unresolved messages are fetched
 * again. A partition taken away by a rebalance is dropped before its next chunk (it is
 * redelivered to its new owner).
 */
export class ChunkScheduler {
  readonly #entries: Entry[] = [];
  readonly #settings: ChunkSettings;
  readonly #handle: (slices: Slice[]) => Promise<void>;
  #lanes = 0;
  #scheduled = false;
  /** A heartbeat failed (a rebalance): every batch not yet handled ends with it. */
  #abort: unknown;
  /** Offsets to commit (the next to read), by topic and partition; sent by #commit. */
  readonly #toCommit = new Map<string, Map<number, string>>();
  #committing: Promise<void> | undefined;
  #commitTimer: NodeJS.Timeout | undefined;
  #committedAt = 0;
  /** Any batch's payload: its commitOffsetsIfNecessary commits for the whole consumer. */
  #committer: EachBatchPayload | undefined;
  #stopping = false;
  #idle: Promise<void> = Promise.resolve();
  #wakeIdle = () => {};

  constructor(settings: ChunkSettings, handle: (slices: Slice[]) => Promise<void>) {
    this.#settings = settings;
    this.#handle = handle;
  }

  /** kafkajs's eachBatch (with eachBatchAutoResolve false and autoCommit false). */
  eachBatch(payload: EachBatchPayload): Promise<void> {
    if (payload.batch.messages.length === 0 || this.#stopping) return Promise.resolve();
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
        if (this.#lanes === 0) this.#idle = new Promise<void>((resolve) => (this.#wakeIdle = resolve));
        this.#lanes += 1;
        void this.#lane().finally(() => {
          this.#lanes -= 1;
          if (this.#entries.some((entry) => !entry.busy)) this.#schedule();
          else if (this.#lanes === 0) this.#wakeIdle();
        });
      }
      if (this.#lanes === 0) this.#wakeIdle();
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
        const { topic, partition, messages } = entry.payload.batch;
        const offsets = this.#toCommit.get(topic) ?? new Map<number, string>();
        offsets.set(partition, (BigInt(messages[end - 1]!.offset) + 1n).toString());
        this.#toCommit.set(topic, offsets);
      }
      const { payload } = taken[0]!.entry;
      this.#committer = payload;
      this.#scheduleCommit();
      for (const { entry, end } of taken) {
        const { messages } = entry.payload.batch;
        entry.payload.resolveOffset(messages[end - 1]!.offset);
        entry.next = end;
        entry.busy = false;
        if (end === messages.length) this.#finish(entry);
      }
      try {
        await payload.heartbeat();
      } catch (error) {
        // A rebalance: the batches not yet handled end (they are redelivered).
        this.#abort = error;
      }
    }
  }

  #scheduleCommit(): void {
    if (this.#commitTimer || this.#committing) return;
    const wait = Math.max(0, this.#committedAt + COMMIT_EVERY_MS - performance.now());
    this.#commitTimer = setTimeout(() => {
      this.#commitTimer = undefined;
      this.#commit();
    }, wait);
  }

  #commit(): void {
    if (this.#toCommit.size === 0 || !this.#committer) return;
    const topics = [...this.#toCommit].map(([topic, offsets]) => ({
      topic,
      partitions: [...offsets].map(([partition, offset]) => ({ partition, offset })),
    }));
    this.#toCommit.clear();
    this.#committedAt = performance.now();
    const committer = this.#committer;
    this.#committing = committer
      .commitOffsetsIfNecessary({ topics })
      .then(() => this.#settings.onCommitted(topics))
      .catch((error: unknown) => {
        this.#settings.onCommitFailure(error);
        // Tried again, unless a later chunk's offset took a partition's place, or the consumer
        // that fetched them stopped (its successor fetches from the committed offsets again).
        if (!committer.isRunning()) return;
        for (const { topic, partitions } of topics) {
          const offsets = this.#toCommit.get(topic) ?? new Map<number, string>();
          for (const { partition, offset } of partitions) if (!offsets.has(partition)) offsets.set(partition, offset);
          this.#toCommit.set(topic, offsets);
        }
        this.#committedAt = performance.now() + COMMIT_RETRY_MS - COMMIT_EVERY_MS;
      })
      .finally(() => {
        this.#committing = undefined;
        if (this.#toCommit.size > 0 && !this.#stopping) this.#scheduleCommit();
      });
  }

  /**
   * Stops taking chunks: the ones in flight finish and their offsets are committed; the messages
   * not yet handled are left unresolved, for whoever fetches them next.
   */
  async stop(): Promise<void> {
    this.#stopping = true;
    for (const entry of [...this.#entries]) if (!entry.busy) this.#finish(entry);
    await this.#idle;
    clearTimeout(this.#commitTimer);
    this.#commitTimer = undefined;
    await this.#committing;
    this.#commit();
    await this.#committing;
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
      } else if (this.#stopping || !entry.payload.isRunning() || entry.payload.isStale()) {
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
