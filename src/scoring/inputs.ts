import ort from 'onnxruntime-node';
import type { InputType, PlanInput } from './plan.js';

/**
 * Rows -> tensors. Each row's values are checked as they are copied; a row with a value the
 * model cannot take is left out, with a reason a person can act on, and the rest still score.
 */

export interface Rejection {
  readonly row: number;
  readonly reason: string;
}

export interface Feeds {
  readonly feeds: Record<string, ort.Tensor>;
  /** Indexes (into the given rows) of the rows in the tensors, in tensor order. */
  readonly accepted: readonly number[];
  readonly rejected: readonly Rejection[];
}

type Buffer = Float32Array | Float64Array | Int32Array | BigInt64Array | Uint8Array | string[];

class BadValue extends Error {}

const FLOAT32_MAX = 3.4028234663852886e38;

function allocate(type: InputType, size: number): Buffer {
  switch (type) {
    case 'float32':
      return new Float32Array(size);
    case 'float64':
      return new Float64Array(size);
    case 'int32':
      return new Int32Array(size);
    case 'int64':
      return new BigInt64Array(size);
    case 'bool':
      return new Uint8Array(size);
    case 'string':
      return new Array<string>(size);
  }
}

function show(value: unknown): string {
  return typeof value === 'string' ? JSON.stringify(value) : String(value);
}

function number(value: unknown, label: string, input: PlanInput): number {
  const n = typeof value === 'number' ? value : typeof value === 'string' ? Number(value) : Number.NaN;
  if (typeof value !== 'number' && typeof value !== 'string') {
    throw new BadValue(`${label} is ${typeof value}; model input ${input.name} takes ${input.type} numbers`);
  }
  if (!Number.isFinite(n)) {
    throw new BadValue(`${label} is ${show(value)}; model input ${input.name} takes finite numbers`);
  }
  return n;
}

function integer(value: unknown, label: string, input: PlanInput): number {
  const n = number(value, label, input);
  if (!Number.isInteger(n)) {
    throw new BadValue(`${label} is ${show(value)}, not an integer; model input ${input.name} is ${input.type}`);
  }
  return n;
}

/** Copies one value into buffer[at], or throws BadValue with the reason. */
function put(buffer: Buffer, at: number, value: unknown, label: string, input: PlanInput): void {
  if (value === null || value === undefined) {
    throw new BadValue(`${label} is NULL; model input ${input.name} has no NULL`);
  }
  switch (input.type) {
    case 'float32': {
      const n = number(value, label, input);
      if (Math.abs(n) > FLOAT32_MAX) {
        throw new BadValue(`${label} is ${show(value)}, too large for float32; model input ${input.name} is float32`);
      }
      buffer[at] = n;
      return;
    }
    case 'float64':
      buffer[at] = number(value, label, input);
      return;
    case 'int32': {
      const n = integer(value, label, input);
      if (n < -2147483648 || n > 2147483647) {
        throw new BadValue(`${label} is ${show(value)}, outside int32; model input ${input.name} is int32`);
      }
      buffer[at] = n;
      return;
    }
    case 'int64': {
      // int8 columns arrive as exact decimal strings; keep them exact.
      let big: bigint;
      if (typeof value === 'string' && /^-?\d+$/.test(value)) big = BigInt(value);
      else big = BigInt(integer(value, label, input));
      if (big < -(2n ** 63n) || big >= 2n ** 63n) {
        throw new BadValue(`${label} is ${show(value)}, outside int64; model input ${input.name} is int64`);
      }
      (buffer as BigInt64Array)[at] = big;
      return;
    }
    case 'bool':
      if (typeof value !== 'boolean') {
        throw new BadValue(`${label} is ${show(value)}; model input ${input.name} takes booleans`);
      }
      buffer[at] = value ? 1 : 0;
      return;
    case 'string':
      if (typeof value !== 'string') {
        throw new BadValue(`${label} is ${show(value)}; model input ${input.name} takes text`);
      }
      (buffer as string[])[at] = value;
      return;
  }
}

/** Width of an input whose width the model leaves open: the first array's length. */
function widthOf(input: PlanInput, rows: readonly (readonly unknown[])[], column: number): number {
  if (input.width !== null) return input.width;
  for (const row of rows) {
    const value = row[column];
    if (Array.isArray(value)) return value.length;
  }
  return 1;
}

/**
 * Builds one tensor per model input from rows whose values start at column `first` and follow
 * the plan's sources in order.
 */
export function buildFeeds(
  inputs: readonly PlanInput[],
  rows: readonly (readonly unknown[])[],
  first: number,
): Feeds {
  const starts: number[] = [];
  let column = first;
  for (const input of inputs) {
    starts.push(column);
    column += input.sources.length;
  }
  const widths = inputs.map((input, i) => widthOf(input, rows, starts[i]!));
  const buffers = inputs.map((input, i) => allocate(input.type, rows.length * widths[i]!));
  const accepted: number[] = [];
  const rejected: Rejection[] = [];

  for (let r = 0; r < rows.length; r++) {
    const row = rows[r]!;
    const slot = accepted.length;
    try {
      for (let i = 0; i < inputs.length; i++) {
        const input = inputs[i]!;
        const width = widths[i]!;
        const buffer = buffers[i]!;
        const base = slot * width;
        if (input.array) {
          const source = input.sources[0]!;
          const values = row[starts[i]!];
          if (values === null || values === undefined) {
            throw new BadValue(`${source.label} is NULL; model input ${input.name} has no NULL`);
          }
          if (!Array.isArray(values)) {
            throw new BadValue(`${source.label} is not an array; model input ${input.name} takes ${width} values`);
          }
          if (values.length !== width) {
            throw new BadValue(`${source.label} has ${values.length} elements; model input ${input.name} takes ${width}`);
          }
          for (let k = 0; k < width; k++) put(buffer, base + k, values[k], `${source.label}[${k + 1}]`, input);
        } else {
          for (let k = 0; k < width; k++) put(buffer, base + k, row[starts[i]! + k], input.sources[k]!.label, input);
        }
      }
      accepted.push(r);
    } catch (error) {
      if (!(error instanceof BadValue)) throw error;
      rejected.push({ row: r, reason: error.message });
    }
  }

  const count = accepted.length;
  const feeds: Record<string, ort.Tensor> = {};
  inputs.forEach((input, i) => {
    const width = widths[i]!;
    const buffer = buffers[i]!;
    const data = Array.isArray(buffer) ? buffer.slice(0, count * width) : buffer.subarray(0, count * width);
    feeds[input.name] = new ort.Tensor(input.type, data, input.rank === 1 ? [count] : [count, width]);
  });
  return { feeds, accepted, rejected };
}
