import { readFile } from 'node:fs/promises';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { SessionCache, type LoadedModel } from '../../src/models/sessions.js';

const IRIS = await readFile(new URL('../../examples/models/iris.onnx', import.meta.url));

/** A cache over iris.onnx that counts loads and records which sessions were released. */
function cache() {
  const loads: string[] = [];
  const released: string[] = [];
  const sessions = new SessionCache(async (name, version) => {
    loads.push(`${name}@${version}`);
    return IRIS;
  }, { threads: 1 });
  const watch = async (model: Promise<LoadedModel>) => {
    const loaded = await model;
    const original = loaded.session.release.bind(loaded.session);
    loaded.session.release = async () => {
      released.push(loaded.ref);
      await original();
    };
    return loaded;
  };
  return { sessions, loads, released, watch };
}

afterEach(() => {
  vi.useRealTimers();
});

describe('SessionCache', () => {
  it('releases a retired session as soon as the last batch holding it lets go', async () => {
    const { sessions, released, watch } = cache();
    const first = sessions.lease();
    const second = sessions.lease();
    await watch(first.get('iris', 1));
    await second.get('iris', 1);
    sessions.retain(new Set(['iris@2']));
    await Promise.resolve();
    expect(released).toEqual([]);
    first.release();
    await Promise.resolve();
    expect(released).toEqual([]);
    second.release();
    await vi.waitFor(() => expect(released).toEqual(['iris@1']));
    await sessions.close();
    expect(released).toEqual(['iris@1']);
  });

  it('releases a session no batch holds when it is retired, and loads it again if asked', async () => {
    const { sessions, loads, released, watch } = cache();
    const lease = sessions.lease();
    await watch(lease.get('iris', 1));
    lease.release();
    expect(released).toEqual([]);
    sessions.retain(new Set());
    await vi.waitFor(() => expect(released).toEqual(['iris@1']));
    const again = sessions.lease();
    await again.get('iris', 1);
    again.release();
    expect(loads).toEqual(['iris@1', 'iris@1']);
    await sessions.close();
  });

  it('uses a retired session again while a batch still holds it (a rollback right after a promotion)', async () => {
    const { sessions, loads, released, watch } = cache();
    const busy = sessions.lease();
    const loaded = await watch(busy.get('iris', 1));
    sessions.retain(new Set(['iris@2']));
    const rollback = sessions.lease();
    expect(await rollback.get('iris', 1)).toBe(loaded);
    busy.release();
    rollback.release();
    await Promise.resolve();
    expect(released).toEqual([]);
    expect(loads).toEqual(['iris@1']);
    await sessions.close();
    expect(released).toEqual(['iris@1']);
  });

  it('holds a session handed out without a lease for a few seconds', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout'] });
    const { sessions, released, watch } = cache();
    await watch(sessions.get('iris', 1));
    sessions.retain(new Set());
    await vi.advanceTimersByTimeAsync(4_000);
    expect(released).toEqual([]);
    await vi.advanceTimersByTimeAsync(1_000);
    expect(released).toEqual(['iris@1']);
    await sessions.close();
    expect(released).toEqual(['iris@1']);
  });
});
