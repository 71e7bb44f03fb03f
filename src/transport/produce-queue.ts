import type { Message, RecordMetadata } from 'kafkajs';

/** Where the broker appended a message. */
export interface Produced {
  readonly partition: number;
  /** Its offset (int64 as text). */
  readonly offset: string;
}

interface Waiting {
  readonly messages: Message[];
  settle(error: unknown, produced?: Produced[]): void;
}

/**
 * One produce request at a time (the idempotent producer allows no more), carrying what every
 * relay lane handed over while the previous one was in flight: a lane that would wait behind
 * another's request joins the next one instead, so lanes add rows to requests rather than
 * requests to the broker. Each lane's promise settles with the request that carried its
 * messages, with the offset of each of them; a request that fails fails every lane in it (their
 * rows stay queued and are sent again). A request takes a lane's messages whole and stays within
 * maxPartitionBytes of message values per partition (the broker limits a partition's share of a
 * request), taking at least one lane's. Every message must name its partition.
 */
export class ProduceQueue {
  readonly #send: (messages: Message[]) => Promise<RecordMetadata[]>;
  readonly #maxPartitionBytes: number;
  readonly #waiting: Waiting[] = [];
  #busy = false;

  constructor(send: (messages: Message[]) => Promise<RecordMetadata[]>, maxPartitionBytes: number) {
    this.#send = send;
    this.#maxPartitionBytes = maxPartitionBytes;
  }

  /** Resolves once the broker acknowledged these messages (acks as the send function asks). */
  send(messages: Message[]): Promise<Produced[]> {
    return new Promise<Produced[]>((resolve, reject) => {
      this.#waiting.push({ messages, settle: (error, produced) => (error === undefined ? resolve(produced ?? []) : reject(error)) });
      if (!this.#busy) void this.#drain();
    });
  }

  async #drain(): Promise<void> {
    this.#busy = true;
    while (this.#waiting.length > 0) {
      const taken = this.#take();
      let metadata: RecordMetadata[];
      try {
        metadata = await this.#send(taken.flatMap((t) => t.messages));
      } catch (error) {
        for (const t of taken) t.settle(error ?? new Error('produce failed'));
        continue;
      }
      // A partition's messages of one request are one record batch, appended in request order
      // from its base offset.
      const next = new Map<number, bigint>();
      for (const { partition, baseOffset } of metadata) if (baseOffset !== undefined) next.set(partition, BigInt(baseOffset));
      for (const t of taken) {
        const produced: Produced[] = [];
        for (const { partition = 0 } of t.messages) {
          const offset = next.get(partition) ?? -1n;
          if (offset >= 0n) next.set(partition, offset + 1n);
          produced.push({ partition, offset: offset.toString() });
        }
        t.settle(undefined, produced);
      }
    }
    this.#busy = false;
  }

  #take(): Waiting[] {
    let bytes = new Map<number | undefined, number>();
    let count = 0;
    for (const { messages } of this.#waiting) {
      const added = new Map(bytes);
      for (const m of messages) added.set(m.partition, (added.get(m.partition) ?? 0) + (m.value?.length ?? 0));
      if (count > 0 && [...added.values()].some((b) => b > this.#maxPartitionBytes)) break;
      bytes = added;
      count += 1;
    }
    return this.#waiting.splice(0, count);
  }
}
