import { runOptions, type LoadedModel } from '../models/sessions.js';
import { buildFeeds, type Rejection } from './inputs.js';
import { readOutputs, type Cell } from './outputs.js';
import type { Plan } from './plan.js';

export interface Scored {
  /** Indexes of the scored rows, in the order of each column's values. */
  readonly rows: readonly number[];
  /** One array per plan output, one value per scored row. */
  readonly columns: readonly Cell[][];
  readonly rejected: readonly Rejection[];
}

/**
 * Scores rows (each the input values in the plan's source order) with one session.run.
 * When the model fails on the batch, the failing rows are looked for (one at a time when the
 * first row fails too, by halves otherwise): they become rejections, the others are scored.
 */
export async function scoreRows(
  model: LoadedModel,
  plan: Plan,
  rows: readonly (readonly unknown[])[],
): Promise<Scored> {
  const { feeds, accepted, rejected } = buildFeeds(plan.inputs, rows, 0);
  const empty = (): Cell[][] => plan.outputs.map(() => []);
  if (accepted.length === 0) return { rows: [], columns: empty(), rejected };

  const fetches = [...new Set(plan.outputs.map((output) => output.output))];
  try {
    const results = await model.session.run(feeds, fetches, runOptions());
    return { rows: accepted, columns: readOutputs(plan.outputs, results, accepted.length, model.ref), rejected };
  } catch (error) {
    if (accepted.length === 1) {
      const reason = `model ${model.ref} failed on this row: ${(error as Error).message}`;
      return { rows: [], columns: empty(), rejected: [...rejected, { row: accepted[0]!, reason }] };
    }
    // Whether the first and the last row fail alone decides how to look for the others: a model
    // failing on every row (or most) is run once per row (n + 2 runs, not the 2n - 1 of halving
    // down to single rows); one failing on a few rows is halved, as those are found in log2(n) steps.
    const firstIndex = accepted[0]!;
    const lastIndex = accepted[accepted.length - 1]!;
    const first = await scoreRows(model, plan, [rows[firstIndex]!]);
    const last = first.rejected.length > 0 ? await scoreRows(model, plan, [rows[lastIndex]!]) : undefined;
    const middle = accepted.slice(1, -1);
    const known = new Map<number, Scored>([[firstIndex, first], ...(last ? [[lastIndex, last] as const] : [])]);
    const parts = last && last.rejected.length > 0
      ? [[firstIndex], ...middle.map((i) => [i]), [lastIndex]]
      : last
        ? [[firstIndex], middle.slice(0, Math.ceil(middle.length / 2)), middle.slice(Math.ceil(middle.length / 2)), [lastIndex]]
        : [[firstIndex], accepted.slice(1, Math.ceil(accepted.length / 2)), accepted.slice(Math.ceil(accepted.length / 2))];
    const scoredRows: number[] = [];
    const columns = empty();
    const failed: Rejection[] = [...rejected];
    for (const part of parts) {
      if (part.length === 0) continue;
      const result = (part.length === 1 ? known.get(part[0]!) : undefined) ?? await scoreRows(model, plan, part.map((i) => rows[i]!));
      scoredRows.push(...result.rows.map((i) => part[i]!));
      result.columns.forEach((values, c) => columns[c]!.push(...values));
      failed.push(...result.rejected.map((r) => ({ row: part[r.row]!, reason: r.reason })));
    }
    return { rows: scoredRows, columns, rejected: failed };
  }
}
