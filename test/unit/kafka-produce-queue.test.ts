import type { Message, RecordMetadata } from 'kafkajs';
import { describe, expect, it } from 'vitest';
import { ProduceQueue } from '../../src/transport/produce-queue.js';

const message = (partition: number, bytes: number, key = 'k'): Message => ({ key, partition, value: Buffer.alloc(bytes) });

function recorder(fail?: (request: Message[]) => boolean) {
  const requests: string[][] = [];
  let release = () => undefined as void;
  let gate = Promise.resolve();
  /** Each partition's log end: a request's messages of a partition are appended from there. */
  const ends = new Map<number, number>();
  const send = async (messages: Message[]): Promise<RecordMetadata[]> => {
    requests.push(messages.map((m) => `${m.key}@${m.partition}`));
    await gate;
    if (fail?.(messages)) throw new Error('broker down');
    const counts = new Map<number, number>();
    for (const m of messages) counts.set(m.partition!, (counts.get(m.partition!) ?? 0) + 1);
    return [...counts].map(([partition, n]) => {
      const baseOffset = ends.get(partition) ?? 100;
      ends.set(partition, baseOffset + n);
      return { topicName: 't', partition, errorCode: 0, baseOffset: String(baseOffset) };
    });
  };
  return {
    requests,
    send,
    hold() {
      gate = new Promise<void>((resolve) => (release = resolve));
    },
    release: () => release(),
  };
}

describe('the relay producing one request at a time', () => {
  it('sends alone when nothing else waits', async () => {
    const r = recorder();
    const queue = new ProduceQueue(r.send, 1000);
    await queue.send([message(0, 10, 'a'), message(1, 10, 'a')]);
    expect(r.requests).toEqual([['a@0', 'a@1']]);
  });

  it('gathers the lanes that arrive while a request is in flight into the next one, in order', async () => {
    const r = recorder();
    const queue = new ProduceQueue(r.send, 1000);
    r.hold();
    const first = queue.send([message(0, 10, 'a')]);
    const second = queue.send([message(0, 10, 'b')]);
    const third = queue.send([message(1, 10, 'c'), message(0, 10, 'c')]);
    r.release();
    await Promise.all([first, second, third]);
    expect(r.requests).toEqual([['a@0'], ['b@0', 'c@1', 'c@0']]);
  });

  it("keeps a request within the per-partition size, taking a lane's messages whole", async () => {
    const r = recorder();
    const queue = new ProduceQueue(r.send, 100);
    r.hold();
    const sends = [queue.send([message(0, 10, 'a')]), queue.send([message(0, 60, 'b')]), queue.send([message(1, 90, 'c'), message(0, 50, 'c')]),
      queue.send([message(0, 500, 'd')]), queue.send([message(1, 5, 'e')])];
    r.release();
    await Promise.all(sends);
    expect(r.requests).toEqual([['a@0'], ['b@0'], ['c@1', 'c@0'], ['d@0'], ['e@1']]);
  });

  it('fails every lane whose messages were in a failed request, and goes on with the next', async () => {
    const r = recorder((messages) => messages.some((m) => m.key === 'b'));
    const queue = new ProduceQueue(r.send, 1000);
    r.hold();
    const a = queue.send([message(0, 10, 'a')]);
    const b = queue.send([message(0, 10, 'b')]);
    const c = queue.send([message(1, 10, 'c')]);
    r.release();
    const results = await Promise.allSettled([a, b, c]);
    expect(results.map((x) => x.status)).toEqual(['fulfilled', 'rejected', 'rejected']);
    await queue.send([message(0, 10, 'd')]);
    expect(r.requests).toEqual([['a@0'], ['b@0', 'c@1'], ['d@0']]);
  });

  it("tells each lane where its messages were appended, from the request's base offset per partition", async () => {
    const r = recorder();
    const queue = new ProduceQueue(r.send, 1000);
    expect(await queue.send([message(0, 10, 'a'), message(1, 10, 'a')])).toEqual([{ partition: 0, offset: '100' }, { partition: 1, offset: '100' }]);
    r.hold();
    const first = queue.send([message(0, 10, 'b')]);
    const second = queue.send([message(1, 10, 'c'), message(0, 10, 'c'), message(0, 10, 'c')]);
    const third = queue.send([message(0, 10, 'd'), message(1, 10, 'd')]);
    r.release();
    expect(await first).toEqual([{ partition: 0, offset: '101' }]);
    expect(await second).toEqual([{ partition: 1, offset: '101' }, { partition: 0, offset: '102' }, { partition: 0, offset: '103' }]);
    expect(await third).toEqual([{ partition: 0, offset: '104' }, { partition: 1, offset: '102' }]);
  });
});
