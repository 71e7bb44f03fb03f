import pg from 'pg';
import type { Plan, PlanInput } from '../scoring/plan.js';

const q = pg.escapeIdentifier;

/**
 * How the claim reads a plan's input values. Text output of floating-point columns (float4out,
 * float8out: shortest round-trip digits) is most of a claim's server time, so a float input fed
 * by plain real or double precision columns travels as one binary array per row instead
 * (array_send(ARRAY[...]), a bytea), which the worker unpacks into numbers. The values are the
 * same either way: a real widened to double precision and stored into a float32 tensor is the
 * real again, and a double precision travels exactly. Every other input (integers, text,
 * booleans, expressions, array columns) is read one column per source, as text.
 */
export type InputRead =
  | { readonly kind: 'columns'; readonly width: number }
  | { readonly kind: 'packed'; readonly element: 'real' | 'float8'; readonly width: number };

const PACKABLE: Record<'float32' | 'float64', readonly string[]> = {
  float32: ['real', 'double precision'],
  float64: ['double precision'],
};

export function inputRead(input: PlanInput): InputRead {
  const width = input.sources.length;
  if ((input.type === 'float32' || input.type === 'float64') && !input.array) {
    const allowed = PACKABLE[input.type];
    if (input.sources.every((s) => 'column' in s && allowed.includes(s.type))) {
      const element = input.sources.every((s) => s.type === 'real') ? 'real' : 'float8';
      return { kind: 'packed', element, width };
    }
  }
  return { kind: 'columns', width };
}

export function readLayout(plan: Plan): InputRead[] {
  return plan.inputs.map(inputRead);
}

/**
 * The claim's value columns over the table aliased t, in plan order (one per packed input).
 * Expressions were checked at deploy (one expression, pg_catalog functions, no subqueries) and
 * run under search_path pg_catalog, pg_temp.
 */
export function valueColumnsSql(plan: Plan): string[] {
  return plan.inputs.flatMap((input) => {
    const read = inputRead(input);
    if (read.kind === 'packed') {
      return [`array_send(ARRAY[${input.sources.map((s) => `t.${q((s as { column: string }).column)}`).join(', ')}]::${read.element}[])`];
    }
    return input.sources.map((source) => {
      const value = 'column' in source ? `t.${q(source.column)}` : `(${source.expr})`;
      return input.type === 'string' ? `(${value})::text` : value;
    });
  });
}

/**
 * The values of one claimed row in plan source order, from its value columns (see
 * valueColumnsSql): packed inputs are unpacked from Postgres' binary array format (header: ndim,
 * flags, element type, then length and lower bound per dimension; each element: its byte length,
 * -1 for NULL, then big-endian bytes).
 */
export function unpackValues(layout: readonly InputRead[], columns: readonly unknown[]): unknown[] {
  const values: unknown[] = [];
  let at = 0;
  for (const read of layout) {
    if (read.kind === 'columns') {
      for (let k = 0; k < read.width; k++) values.push(columns[at + k]);
      at += read.width;
      continue;
    }
    const bytes = columns[at++] as Buffer;
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const ndim = view.getInt32(0);
    let offset = 12 + 8 * ndim;
    const size = read.element === 'real' ? 4 : 8;
    for (let k = 0; k < read.width; k++) {
      const length = view.getInt32(offset);
      offset += 4;
      if (length < 0) {
        values.push(null);
        continue;
      }
      values.push(size === 4 ? view.getFloat32(offset) : view.getFloat64(offset));
      offset += size;
    }
  }
  return values;
}
