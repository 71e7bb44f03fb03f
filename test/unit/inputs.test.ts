import { describe, expect, it } from 'vitest';
import { buildFeeds } from '../../src/scoring/inputs.js';
import type { PlanInput } from '../../src/scoring/plan.js';

const column = (name: string) => ({ column: name, attnum: 1, label: `column "${name}"`, type: 'real' });

const input = (over: Partial<PlanInput> & Pick<PlanInput, 'name' | 'type'>): PlanInput => ({
  rank: 2,
  width: 1,
  array: false,
  sources: [column(over.name)],
  ...over,
});

describe('buildFeeds', () => {
  it('packs several columns into one [N, k] tensor and one column into another', () => {
    const inputs = [
      input({ name: 'X', type: 'float32', width: 2, sources: [column('a'), column('b')] }),
      input({ name: 'n', type: 'int64', rank: 1 }),
    ];
    // Rows carry a key first; values start at column 1.
    const { feeds, accepted, rejected } = buildFeeds(inputs, [['k1', 1.5, '2', '9007199254740993'], ['k2', 3, 4, 5]], 1);
    expect(rejected).toEqual([]);
    expect(accepted).toEqual([0, 1]);
    expect(feeds.X!.dims).toEqual([2, 2]);
    expect(Array.from(feeds.X!.data as Float32Array)).toEqual([1.5, 2, 3, 4]);
    expect(feeds.n!.dims).toEqual([2]);
    expect(Array.from(feeds.n!.data as BigInt64Array)).toEqual([9007199254740993n, 5n]);
  });

  it('takes array columns, booleans, strings, int32 and float64', () => {
    const inputs = [
      input({ name: 'v', type: 'float64', width: 3, array: true, sources: [column('v')] }),
      input({ name: 'flag', type: 'bool' }),
      input({ name: 'tag', type: 'string' }),
      input({ name: 'i', type: 'int32' }),
    ];
    const { feeds, rejected } = buildFeeds(inputs, [[[1, 2, 3], true, 'x', '-7']], 0);
    expect(rejected).toEqual([]);
    expect(Array.from(feeds.v!.data as Float64Array)).toEqual([1, 2, 3]);
    expect(Array.from(feeds.flag!.data as Uint8Array)).toEqual([1]);
    expect(feeds.tag!.data).toEqual(['x']);
    expect(Array.from(feeds.i!.data as Int32Array)).toEqual([-7]);
  });

  it.each([
    ['float32', null, 'column "x" is NULL; model input m has no NULL'],
    ['float32', Number.NaN, 'column "x" is NaN; model input m takes finite numbers'],
    ['float32', '-Infinity', 'column "x" is "-Infinity"; model input m takes finite numbers'],
    ['float32', '1e39', 'column "x" is "1e39", too large for float32; model input m is float32'],
    ['int32', 2.5, 'column "x" is 2.5, not an integer; model input m is int32'],
    ['int32', 2147483648, 'column "x" is 2147483648, outside int32; model input m is int32'],
    ['int64', '9223372036854775808', 'column "x" is "9223372036854775808", outside int64; model input m is int64'],
    ['bool', 1, 'column "x" is 1; model input m takes booleans'],
    ['string', 5, 'column "x" is 5; model input m takes text'],
  ] as const)('rejects a %s input of %s with a reason, and keeps the good rows', (type, value, reason) => {
    const inputs = [input({ name: 'm', type, sources: [column('x')] })];
    const good = type === 'bool' ? true : type === 'string' ? 'ok' : 1;
    const { accepted, rejected, feeds } = buildFeeds(inputs, [[good], [value], [good]], 0);
    expect(rejected).toEqual([{ row: 1, reason }]);
    expect(accepted).toEqual([0, 2]);
    expect(feeds.m!.dims).toEqual([2, 1]);
  });

  it('rejects an array of the wrong length or with a NULL element', () => {
    const inputs = [input({ name: 'v', type: 'float32', width: 2, array: true, sources: [column('v')] })];
    const { rejected, accepted } = buildFeeds(inputs, [[[1, 2, 3]], [[1, null]], [[1, 2]], [null]], 0);
    expect(accepted).toEqual([2]);
    expect(rejected).toEqual([
      { row: 0, reason: 'column "v" has 3 elements; model input v takes 2' },
      { row: 1, reason: 'column "v"[2] is NULL; model input v has no NULL' },
      { row: 3, reason: 'column "v" is NULL; model input v has no NULL' },
    ]);
  });
});
