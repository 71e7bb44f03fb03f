import ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { readOutputs } from '../../src/scoring/outputs.js';
import type { PlanOutput } from '../../src/scoring/plan.js';

const output = (over: Partial<PlanOutput> & Pick<PlanOutput, 'column' | 'output'>): PlanOutput => ({
  attnum: 1,
  index: 0,
  type: 'float32',
  sql_type: 'real',
  array: false,
  ...over,
});

describe('readOutputs', () => {
  const probabilities = new ort.Tensor('float32', Float32Array.from([0.25, 0.75, 0.5, 0.5]), [2, 2]);
  const label = new ort.Tensor('int64', BigInt64Array.from([1n, 9007199254740993n]), [2]);
  const names = new ort.Tensor('string', ['a', 'b "quoted"'], [2, 1]);

  it('reads an indexed value per row, whole rows into arrays, and int64 exactly', () => {
    const columns = readOutputs(
      [
        output({ column: 'p1', output: 'probabilities', index: 1 }),
        output({ column: 'all', output: 'probabilities', index: null, array: true, sql_type: 'real[]' }),
        output({ column: 'label', output: 'label', type: 'int64', sql_type: 'bigint' }),
        output({ column: 'name', output: 'names', type: 'string', sql_type: 'text' }),
      ],
      { probabilities, label, names },
      2,
      'm@1',
    );
    expect(columns).toEqual([
      [0.75, 0.5],
      ['{0.25,0.75}', '{0.5,0.5}'],
      ['1', '9007199254740993'],
      ['a', 'b "quoted"'],
    ]);
  });

  it('refuses outputs whose shape does not match the batch', () => {
    expect(() => readOutputs([output({ column: 'p', output: 'probabilities', index: 3 })], { probabilities }, 2, 'm@1')).toThrow(
      'output "probabilities" of model m@1 has 2 values per row; column p reads value 3',
    );
    expect(() => readOutputs([output({ column: 'p', output: 'probabilities' })], { probabilities }, 3, 'm@1')).toThrow(
      'output "probabilities" of model m@1 has shape [2, 2] for 3 rows; expected [3] or [3, k]',
    );
  });
});
