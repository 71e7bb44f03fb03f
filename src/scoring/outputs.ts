import type ort from 'onnxruntime-node';
import { arrayLiteral } from '../db/array-literal.js';
import { ModelError } from '../errors.js';
import type { PlanOutput } from './plan.js';

/** One prediction value as it travels to Postgres (bigint as text, arrays as literals). */
export type Cell = number | string | boolean;

function cell(tensor: ort.Tensor, at: number): Cell {
  const value = (tensor.data as ArrayLike<unknown>)[at];
  if (typeof value === 'bigint') return value.toString();
  if (tensor.type === 'bool') return value === 1 || value === true;
  return value as number | string;
}

/**
 * Tensors -> one array of values per prediction column, `count` rows each, in tensor row order.
 * `probabilities[1]` takes value 1 of each row; no index takes the whole row into an array column.
 */
export function readOutputs(
  outputs: readonly PlanOutput[],
  results: Readonly<Record<string, ort.Tensor>>,
  count: number,
  model: string,
): Cell[][] {
  return outputs.map((output) => {
    const tensor = results[output.output];
    if (!tensor) throw new ModelError(`model ${model} returned no output "${output.output}"`);
    const dims = tensor.dims;
    if (dims[0] !== count || dims.length > 2) {
      throw new ModelError(
        `output "${output.output}" of model ${model} has shape [${dims.join(', ')}] for ${count} rows; expected [${count}] or [${count}, k]`,
      );
    }
    const width = dims.length === 2 ? dims[1]! : 1;
    const values: Cell[] = new Array<Cell>(count);
    if (output.index === null) {
      for (let r = 0; r < count; r++) {
        const row: Cell[] = [];
        for (let k = 0; k < width; k++) row.push(cell(tensor, r * width + k));
        values[r] = arrayLiteral(row);
      }
    } else {
      if (output.index >= width) {
        throw new ModelError(`output "${output.output}" of model ${model} has ${width} values per row; column ${output.column} reads value ${output.index}`);
      }
      for (let r = 0; r < count; r++) values[r] = cell(tensor, r * width + output.index);
    }
    return values;
  });
}
