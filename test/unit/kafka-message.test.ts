import { Partitioners, type PartitionMetadata } from 'kafkajs';
import { describe, expect, it } from 'vitest';
import type { ClaimedRow } from '../../src/queue/claimed-row.js';
import { decodeMessage, encodeRows, MESSAGE_VERSION, rowsIn, toClaimedRow } from '../../src/transport/message.js';
import { partitionOf, rowKey } from '../../src/transport/partition.js';

const deployment = { id: 7, keyCount: 1, sql: { fingerprint: '1x3k9' } };

const row = (key: string, values: unknown[], extra: Partial<ClaimedRow> = {}): ClaimedRow => ({
  keys: [key],
  ageMs: 12,
  xmin: '1234',
  tid: '(0,5)',
  attempts: 0,
  values,
  ...extra,
});

function decoded(value: Buffer) {
  const result = decodeMessage(value);
  if (!result.ok) throw new Error(result.reason);
  return result.message;
}

function reason(value: Buffer | null): string {
  const result = decodeMessage(value);
  if (result.ok) throw new Error('decoded');
  return result.reason;
}

describe('Kafka message format 2', () => {
  it('carries every kind of input value exactly, with keys, row version, place, queue time and attempts', () => {
    const values = [
      5.1, Math.fround(3.5), -0, 16_777_217, Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, 1e-310,
      null, true, false, '', 'plain', 'ünïcødé ✓', 'x'.repeat(300), '9223372036854775807', '12345.678901234567890',
      [1.5, null, 'a', [true, 2]], [], { a: 1, b: [2] }, new Date(Date.UTC(2024, 0, 2)), undefined,
    ];
    const rows = [
      row('42', values, { attempts: 3, xmin: '4294967295', tid: '(4294967295,65535)' }),
      { keys: ['1', 'naïve key', ''], ageMs: 0.5, xmin: '1', tid: '(0,1)', attempts: 0, values: [1] },
    ];
    const [message, ...more] = encodeRows({ id: 4_000_000_000, keyCount: 3, sql: { fingerprint: 'f' } }, rows.slice(1), 1000);
    expect(more).toEqual([]);
    expect(decoded(message!)).toEqual({
      version: MESSAGE_VERSION, deployment: 4_000_000_000, fingerprint: 'f', keyCount: 3,
      rows: [{ keys: ['1', 'naïve key', ''], xmin: '1', tid: '(0,1)', queuedAt: 999.5, attempts: 0, values: [1] }],
    });

    const [single] = encodeRows(deployment, rows.slice(0, 1), 1_795_785_190_036);
    const got = decoded(single!);
    expect(got).toMatchObject({ version: 2, deployment: 7, fingerprint: '1x3k9', keyCount: 1 });
    expect(got.rows).toHaveLength(1);
    const [r] = got.rows;
    expect(r).toMatchObject({ keys: ['42'], xmin: '4294967295', tid: '(4294967295,65535)', queuedAt: 1_795_785_190_024, attempts: 3 });
    // Objects travel as JSON (a Date as its text), as in format 1; undefined as NULL.
    const expected = values.map((v) => (v instanceof Date ? v.toJSON() : v === undefined ? null : v));
    expect(r!.values).toEqual(expected);
    expect(Object.is(r!.values[2], -0)).toBe(true);
    expect(r!.values[3]).toBe(16_777_217);
    expect(r!.values[7]).toBe(1e-310);
    expect(toClaimedRow(r!, 1_795_785_190_124)).toEqual({
      keys: ['42'], ageMs: 100, xmin: '4294967295', tid: '(4294967295,65535)', attempts: 3, values: r!.values,
    });
  });

  it('holds numbers a float32 holds exactly in 4 bytes, others in 8', () => {
    const [floats] = encodeRows(deployment, [row('1', Array.from({ length: 30 }, (_, i) => Math.fround(i / 7)))], 0);
    const [doubles] = encodeRows(deployment, [row('1', Array.from({ length: 30 }, (_, i) => i / 7 + 1e-9))], 0);
    expect(doubles!.length - floats!.length).toBe(30 * 4);
    expect(decoded(floats!).rows[0]!.values).toEqual(Array.from({ length: 30 }, (_, i) => Math.fround(i / 7)));
  });

  it('starts a new message when one reaches the size limit, keeping the rows in order', () => {
    const rows = Array.from({ length: 50 }, (_, i) => row(String(i), [i / 3, 'x'.repeat(100)]));
    const messages = encodeRows(deployment, rows, 0, 1000);
    expect(messages.length).toBeGreaterThan(5);
    for (const m of messages) expect(m.length).toBeLessThan(1000 + 200);
    expect(messages.flatMap((m) => decoded(m).rows.map((r) => r.keys[0]))).toEqual(rows.map((r) => r.keys[0]));
    expect(messages.map(rowsIn).reduce((a, b) => a + b)).toBe(50);
  });

  it('tells how many rows a message holds from its header', () => {
    const [m] = encodeRows(deployment, [row('1', [1]), row('2', [2]), row('3', [3])], 0);
    expect(rowsIn(m!)).toBe(3);
    expect(rowsIn(Buffer.from('{"v":1}'))).toBe(1);
    expect(rowsIn(null)).toBe(1);
    expect(rowsIn(m!.subarray(0, 12))).toBe(1);
  });

  it('turns a damaged or foreign message into a reason, never a throw', () => {
    const [m] = encodeRows(deployment, [row('42', [1.5, 'text', [1, 2], { a: 1 }]), row('43', [null, true])], 0);
    for (let length = 1; length < m!.length; length++) {
      expect(reason(m!.subarray(0, length))).toMatch(/^message is not a pgscore row message v2: /);
    }
    expect(reason(null)).toBe('message has no value');
    expect(reason(Buffer.alloc(0))).toBe('message has no value');
    expect(reason(Buffer.concat([m!, Buffer.from([0])]))).toBe('message is not a pgscore row message v2: 1 byte(s) after the last of 2 rows');
    const version = Buffer.from(m!);
    version[4] = 9;
    expect(reason(version)).toBe('message is not a pgscore row message v2: format version 9 is not known to this worker (it reads 1 and 2); upgrade it');
    const magic = Buffer.from(m!);
    magic[1] = 0x51;
    expect(reason(magic)).toBe('message is not a pgscore row message v2: does not start with the magic bytes 00 50 47 53');
    const tag = Buffer.from(m!);
    // The first value tag follows the header (4 + 1 + 4 + 6 + 1 + 4), the key, xmin, ctid, time, attempts and count.
    const first = 20 + 3 + 5 + 6 + 8 + 1 + 1;
    expect(tag[first]).toBe(7); // 1.5, a float32
    tag[first] = 42;
    expect(reason(tag)).toBe(`message is not a pgscore row message v2: unknown value tag 42 at byte ${first}`);
    const [badTid] = encodeRows(deployment, [row('1', [1], { tid: '0,5' })], 0);
    expect(reason(badTid!)).toBe('message is not a pgscore row message v2: row 1: row place "0,5" is not a ctid');
    const [badXmin] = encodeRows(deployment, [row('1', [1], { xmin: '-1' })], 0);
    expect(reason(badXmin!)).toBe('message is not a pgscore row message v2: row 1: row version "-1" is not an xid');
  });

  it('refuses to encode a row whose key does not fit the deployment', () => {
    expect(() => encodeRows({ ...deployment, keyCount: 2 }, [row('0', [0]), row('1', [1])], 0)).toThrow(/has 1 key values, its plan 2/);
    // What the failed call had written is not carried into the next message.
    const [next] = encodeRows(deployment, [row('2', [2])], 0);
    expect(decoded(next!).rows.map((r) => r.keys)).toEqual([['2']]);
  });
});

describe('Kafka message format 1 (JSON, one row), still read after an upgrade', () => {
  const v1 = { v: 1, d: 7, f: '1x3k9', k: ['42'], x: '1234', t: '(0,5)', q: 1_795_785_190_036, i: [5.1, { $f: 'NaN' }, [1, { $f: '-Infinity' }], '12', true, null] };

  it('decodes to a message of one row', () => {
    const message = decoded(Buffer.from(JSON.stringify(v1)));
    expect(message).toEqual({
      version: 1, deployment: 7, fingerprint: '1x3k9', keyCount: 1,
      rows: [{ keys: ['42'], xmin: '1234', tid: '(0,5)', queuedAt: 1_795_785_190_036, attempts: 0, values: [5.1, Number.NaN, [1, Number.NEGATIVE_INFINITY], '12', true, null] }],
    });
    expect(rowsIn(Buffer.from(JSON.stringify(v1)))).toBe(1);
  });

  it('says what is wrong with JSON that is not a row message', () => {
    expect(reason(Buffer.from('not json'))).toMatch(/^message is not JSON: /);
    expect(reason(Buffer.from(JSON.stringify({ v: 0, d: 1 })))).toBe('message is not a pgscore row message v1: v: Invalid input: expected 1');
    expect(reason(Buffer.from(JSON.stringify({ ...v1, t: '0,5' })))).toMatch(/^message is not a pgscore row message v1: t: /);
  });
});

describe('partitions', () => {
  it("send each row where kafkajs's default partitioner sent its format-1 message", () => {
    const partitioner = Partitioners.DefaultPartitioner();
    for (const partitions of [1, 4, 12, 100]) {
      const partitionMetadata = Array.from({ length: partitions }, (_, i) => ({ partitionId: i, leader: 0 })) as PartitionMetadata[];
      for (let i = 0; i < 2000; i++) {
        const keys = i % 3 === 0 ? [String(i), `ü${i}`] : i % 3 === 1 ? [String(i * 7919)] : [`${'long key '.repeat(i % 50)}${i}`];
        const key = rowKey(7, keys);
        expect(partitionOf(key, partitions)).toBe(partitioner({ topic: 't', partitionMetadata, message: { key, value: null } }));
      }
    }
  });
});
