import { describe, expect, it } from 'vitest';
import { inputRead, unpackValues } from '../../src/queue/read-layout.js';
import type { PlanInput } from '../../src/scoring/plan.js';

/** Postgres' binary array format (array_send) of a one-dimensional array; null elements as -1 lengths. */
function arraySend(element: 'real' | 'float8', values: readonly (number | null)[]): Buffer {
  const size = element === 'real' ? 4 : 8;
  const bytes = Buffer.alloc(20 + values.reduce<number>((n, v) => n + 4 + (v === null ? 0 : size), 0));
  bytes.writeInt32BE(1, 0);
  bytes.writeInt32BE(values.includes(null) ? 1 : 0, 4);
  bytes.writeInt32BE(element === 'real' ? 700 : 701, 8);
  bytes.writeInt32BE(values.length, 12);
  bytes.writeInt32BE(1, 16);
  let at = 20;
  for (const v of values) {
    if (v === null) {
      bytes.writeInt32BE(-1, at);
      at += 4;
      continue;
    }
    bytes.writeInt32BE(size, at);
    if (size === 4) bytes.writeFloatBE(v, at + 4);
    else bytes.writeDoubleBE(v, at + 4);
    at += 4 + size;
  }
  return bytes;
}

const input = (type: PlanInput['type'], types: string[], extra: Partial<PlanInput> = {}): PlanInput => ({
  name: 'X',
  type,
  rank: 2,
  width: types.length,
  array: false,
  sources: types.map((t, i) => ({ column: `c${i}`, attnum: i + 1, label: `c${i}`, type: t })),
  ...extra,
});

describe('the claim reads float inputs packed', () => {
  it('packs float inputs of real and double precision columns, and nothing else', () => {
    expect(inputRead(input('float32', ['real', 'real']))).toEqual({ kind: 'packed', element: 'real', width: 2 });
    expect(inputRead(input('float32', ['real', 'double precision']))).toEqual({ kind: 'packed', element: 'float8', width: 2 });
    expect(inputRead(input('float64', ['double precision']))).toEqual({ kind: 'packed', element: 'float8', width: 1 });
    // A real read for a float64 model travels as text, as before (its shortest decimal form).
    expect(inputRead(input('float64', ['real'])).kind).toBe('columns');
    expect(inputRead(input('float32', ['real', 'integer'])).kind).toBe('columns');
    expect(inputRead(input('float32', ['numeric'])).kind).toBe('columns');
    expect(inputRead(input('int64', ['bigint'])).kind).toBe('columns');
    expect(inputRead(input('float32', ['real[]'], { array: true })).kind).toBe('columns');
    const expression = { ...input('float32', ['real']), sources: [{ expr: 'c0 * 2', columns: [], label: 'c0 * 2', type: 'real' }] };
    expect(inputRead(expression).kind).toBe('columns');
  });

  it('unpacks values in source order, NULL, NaN and infinities included, beside plain columns', () => {
    const layout = [inputRead(input('float32', ['real', 'real', 'real', 'real'])), inputRead(input('string', ['text'])), inputRead(input('float64', ['double precision', 'double precision']))];
    const values = unpackValues(layout, [
      arraySend('real', [1.5, null, Number.NaN, Number.POSITIVE_INFINITY]),
      'a',
      arraySend('float8', [0.1, -1e300]),
    ]);
    expect(values).toEqual([1.5, null, Number.NaN, Number.POSITIVE_INFINITY, 'a', 0.1, -1e300]);
  });
});
