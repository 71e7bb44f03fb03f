import { Writable } from 'node:stream';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { RateLimitedLog } from '../../src/log-limit.js';

/** A real pino logger whose JSON lines are collected, and a clock the test moves. */
function setup(options: { maxKeys?: number } = {}) {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  const clock = { now: 0 };
  const log = new RateLimitedLog(pino(sink), { intervalMs: 10_000, now: () => clock.now, ...options });
  return { lines, clock, log };
}

describe('RateLimitedLog', () => {
  it('writes the first occurrence at once, without a repeat count', () => {
    const { lines, log } = setup();
    expect(log.warn('m@1', { model: 'm@1' }, 'model failed')).toBe(true);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ level: 40, model: 'm@1', msg: 'model failed' });
    expect(lines[0]).not.toHaveProperty('repeated');
  });

  it('drops repeats within the interval and reports their count on the next line', () => {
    const { lines, clock, log } = setup();
    log.error('m@1', { model: 'm@1' }, 'model failed');
    for (let i = 0; i < 972; i += 1) {
      clock.now += 10;
      expect(log.error('m@1', { model: 'm@1' }, 'model failed')).toBe(false);
    }
    expect(lines).toHaveLength(1);

    clock.now = 10_000;
    expect(log.error('m@1', { model: 'm@1' }, 'model failed')).toBe(true);
    expect(lines).toHaveLength(2);
    expect(lines[1]).toMatchObject({ level: 50, model: 'm@1', msg: 'model failed', repeated: 972 });

    // The count starts again after each line.
    clock.now += 1;
    log.error('m@1', { model: 'm@1' }, 'model failed');
    clock.now += 10_000;
    log.error('m@1', { model: 'm@1' }, 'model failed');
    expect(lines[2]).toMatchObject({ repeated: 1 });
  });

  it('limits each key on its own', () => {
    const { lines, clock, log } = setup();
    log.warn('a', { model: 'a' }, 'failed');
    log.warn('b', { model: 'b' }, 'failed');
    clock.now += 5_000;
    log.warn('a', { model: 'a' }, 'failed');
    clock.now += 5_000;
    log.warn('b', { model: 'b' }, 'failed');
    expect(lines.map((line) => [line.model, line.repeated])).toEqual([
      ['a', undefined],
      ['b', undefined],
      ['b', undefined],
    ]);
  });

  it('forgets keys beyond maxKeys and keys long idle', () => {
    const { lines, clock, log } = setup({ maxKeys: 3 });
    for (let i = 0; i < 10; i += 1) log.warn(`k${i}`, {}, 'failed');
    expect(log.size).toBe(3);
    expect(lines).toHaveLength(10);

    clock.now += 60_000;
    log.warn('fresh', {}, 'failed');
    expect(log.size).toBe(1);
  });
});
