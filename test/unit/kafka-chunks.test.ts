import type { EachBatchPayload, KafkaMessage } from 'kafkajs';
import { describe, expect, it } from 'vitest';
import { ChunkScheduler, type Slice } from '../../src/transport/kafka-batches.js';

/** A partition's batch as kafkajs hands it to eachBatch; `rows` per message in the value's first byte. */
function batch(partition: number, rows: number[], state = { running: true, stale: false }) {
  const resolved: string[] = [];
  /** Each commit asked of this batch's payload, as partition:offset. */
  const committed: string[][] = [];
  let heartbeats = 0;
  const messages = rows.map((n, i) => ({ offset: String(100 + i), value: Buffer.from([n]), key: null }) as unknown as KafkaMessage);
  const payload = {
    batch: { topic: 't', partition, messages },
    resolveOffset: (offset: string) => resolved.push(offset),
    commitOffsetsIfNecessary: async (offsets: { topics: { partitions: { partition: number; offset: string }[] }[] }) =>
      void committed.push(offsets.topics.flatMap((t) => t.partitions.map((p) => `${p.partition}:${p.offset}`))),
    heartbeat: async () => void (heartbeats += 1),
    isRunning: () => state.running,
    isStale: () => state.stale,
  } as unknown as EachBatchPayload;
  return { payload, resolved, committed, state, heartbeats: () => heartbeats };
}

const describeSlice = (s: Slice) => `${s.partition}:${s.messages.map((m) => m.offset).join(',')}`;

function scheduler(rowsPerChunk: number, lanes: number, handle: (slices: Slice[]) => Promise<void>) {
  return new ChunkScheduler({ rowsPerChunk, lanes, rowsIn: (m) => m.value![0]!, onCommitFailure: (error) => { throw error; }, onCommitted: () => undefined }, handle);
}

describe('chunks across partitions', () => {
  it('handles a fetch of several partitions as few chunks, resolving each partition only after its chunk', async () => {
    const chunks: string[][] = [];
    const resolvedAtHandle: number[] = [];
    const batches = [batch(0, [2, 2]), batch(1, [3]), batch(2, [1, 1, 1, 1, 1, 1])];
    const chunker = scheduler(6, 1, async (slices) => {
      resolvedAtHandle.push(batches.reduce((n, b) => n + b.resolved.length, 0));
      chunks.push(slices.map(describeSlice));
    });
    await Promise.all(batches.map((b) => chunker.eachBatch(b.payload)));
    // A message of each partition in turn, up to 6 rows (2 + 3 + 1, then 2 + 1 + 1 + 1 + 1).
    expect(chunks).toEqual([['0:100', '1:100', '2:100'], ['0:101', '2:101,102,103,104'], ['2:105']]);
    expect(resolvedAtHandle).toEqual([0, 3, 5]);
    expect(batches.map((b) => b.resolved)).toEqual([['100', '101'], ['100'], ['100', '104', '105']]);
    expect(batches[0]!.heartbeats()).toBe(2);
    // Offsets (the next to read) are committed after the chunks, several chunks' in one request.
    await chunker.stop();
    const commits = batches.flatMap((b) => b.committed);
    expect(commits.length).toBeLessThanOrEqual(2);
    expect(Object.fromEntries(commits.flat().map((c) => c.split(':')))).toEqual({ 0: '102', 1: '101', 2: '106' });
  });

  it('gives each lane its share of the partitions while more rows wait than one chunk takes', async () => {
    const chunks: string[][] = [];
    const batches = [0, 1, 2, 3].map((p) => batch(p, [1, 1, 1]));
    const chunker = scheduler(4, 2, async (slices) => {
      chunks.push(slices.map(describeSlice));
      await new Promise((resolve) => setTimeout(resolve, 5));
    });
    await Promise.all(batches.map((b) => chunker.eachBatch(b.payload)));
    expect(chunks.slice(0, 2)).toEqual([['0:100,101', '1:100,101'], ['2:100,101', '3:100,101']]);
    // Then the rows left of partitions 0 and 1 are fewer than a chunk: one chunk takes them all.
    expect(chunks.slice(2)).toEqual([['0:102', '1:102'], ['2:102', '3:102']]);
  });

  it('keeps a partition in order, in one chunk at a time, and takes at least one message', async () => {
    const chunks: string[][] = [];
    let inFlight = 0;
    const b = batch(0, [5, 5, 5]);
    const chunker = scheduler(2, 3, async (slices) => {
      inFlight += 1;
      expect(inFlight).toBe(1);
      chunks.push(slices.map(describeSlice));
      await new Promise((resolve) => setTimeout(resolve, 5));
      inFlight -= 1;
    });
    await chunker.eachBatch(b.payload);
    expect(chunks).toEqual([['0:100'], ['0:101'], ['0:102']]);
    expect(b.resolved).toEqual(['100', '101', '102']);
  });

  it('commits offsets at most every 50 ms, one request at a time, each with what the chunks since handled', async () => {
    const b = batch(0, Array.from({ length: 20 }, () => 1));
    const chunker = scheduler(1, 1, () => new Promise((resolve) => setTimeout(resolve, 10)));
    const started = performance.now();
    await chunker.eachBatch(b.payload);
    const ms = performance.now() - started;
    await chunker.stop();
    expect(b.committed.length).toBeGreaterThanOrEqual(2);
    expect(b.committed.length).toBeLessThanOrEqual(Math.ceil(ms / 50) + 2);
    expect(b.committed.at(-1)).toEqual(['0:120']);
  });

  it('tries a failed commit again until it lands, unless its consumer stopped (K1: a partition with no later message stayed uncommitted for good)', async () => {
    const failures: unknown[] = [];
    const b = batch(0, [1]);
    const payload = b.payload as { commitOffsetsIfNecessary: (offsets: unknown) => Promise<void> };
    const commit = payload.commitOffsetsIfNecessary;
    let tries = 0;
    payload.commitOffsetsIfNecessary = async (offsets) => {
      tries += 1;
      if (tries <= 2) throw new Error('Closed connection');
      return commit(offsets);
    };
    const chunker = new ChunkScheduler(
      { rowsPerChunk: 1, lanes: 1, rowsIn: () => 1, onCommitFailure: (error) => failures.push(error), onCommitted: () => undefined },
      async () => undefined,
    );
    await chunker.eachBatch(b.payload);
    const started = performance.now();
    while (b.committed.length === 0 && performance.now() - started < 5_000) await new Promise((resolve) => setTimeout(resolve, 20));
    expect(b.committed).toEqual([['0:101']]);
    expect(failures).toHaveLength(2);
    expect(performance.now() - started).toBeGreaterThanOrEqual(1_500);

    const gone = batch(1, [1]);
    const stopped = gone.payload as { commitOffsetsIfNecessary: (offsets: unknown) => Promise<void>; isRunning: () => boolean };
    let attempts = 0;
    stopped.commitOffsetsIfNecessary = async () => {
      attempts += 1;
      gone.state.running = false;
      throw new Error('Closed connection');
    };
    await chunker.eachBatch(gone.payload);
    await new Promise((resolve) => setTimeout(resolve, 1_300));
    expect(attempts).toBe(1);
    await chunker.stop();
  });

  it('runs chunks of different partitions side by side, up to the lanes', async () => {
    let inFlight = 0;
    let most = 0;
    const batches = [0, 1, 2, 3].map((p) => batch(p, [4]));
    const chunker = scheduler(4, 2, async () => {
      inFlight += 1;
      most = Math.max(most, inFlight);
      await new Promise((resolve) => setTimeout(resolve, 10));
      inFlight -= 1;
    });
    await Promise.all(batches.map((b) => chunker.eachBatch(b.payload)));
    expect(most).toBe(2);
  });

  it('a failed chunk fails the batches of its partitions only, with nothing of them resolved', async () => {
    const failing = batch(0, [1, 1]);
    const other = batch(1, [1]);
    const chunker = scheduler(1, 1, async (slices) => {
      if (slices[0]!.partition === 0) throw new Error('write-back failed');
    });
    const results = await Promise.allSettled([chunker.eachBatch(failing.payload), chunker.eachBatch(other.payload)]);
    expect(results.map((r) => r.status)).toEqual(['rejected', 'fulfilled']);
    expect((results[0] as PromiseRejectedResult).reason).toEqual(new Error('write-back failed'));
    expect(failing.resolved).toEqual([]);
    expect(other.resolved).toEqual(['100']);
  });

  it('drops a partition taken away by a rebalance before its next chunk, unresolved', async () => {
    const taken = batch(0, [1, 1, 1]);
    const chunks: string[][] = [];
    const chunker = scheduler(1, 1, async (slices) => {
      chunks.push(slices.map(describeSlice));
      taken.state.stale = true;
    });
    await chunker.eachBatch(taken.payload);
    expect(chunks).toEqual([['0:100']]);
    expect(taken.resolved).toEqual(['100']);
  });

  it('stops after the chunks in flight, their offsets committed, leaving the rest unresolved', async () => {
    const b = batch(0, [1, 1, 1]);
    let release!: () => void;
    const handled: string[][] = [];
    const chunker = scheduler(1, 1, async (slices) => {
      handled.push(slices.map(describeSlice));
      await new Promise<void>((resolve) => (release = resolve));
    });
    const done = chunker.eachBatch(b.payload);
    await new Promise((resolve) => setImmediate(resolve));
    const stopped = chunker.stop();
    release();
    await Promise.all([stopped, done]);
    expect(handled).toEqual([['0:100']]);
    expect(b.resolved).toEqual(['100']);
    expect(b.committed).toEqual([['0:101']]);
    await chunker.eachBatch(batch(1, [1]).payload);
    expect(handled).toEqual([['0:100']]);
  });

  it('ends every batch not yet handled when a heartbeat reports a rebalance', async () => {
    const first = batch(0, [1, 1]);
    const rebalance = new Error('The group is rebalancing, so a rejoin is needed');
    (first.payload as { heartbeat: () => Promise<void> }).heartbeat = async () => {
      throw rebalance;
    };
    const chunker = scheduler(1, 1, async () => undefined);
    await expect(chunker.eachBatch(first.payload)).rejects.toBe(rebalance);
    expect(first.resolved).toEqual(['100']);
  });
});
