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
 * When the model fails on the batch, each half is scored on its own until the failing rows
 * are found: they become rejections, the others are scored.
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
    const middle = Math.ceil(accepted.length / 2);
    const scoredRows: number[] = [];
    const columns = empty();
    const failed: Rejection[] = [...rejected];
    for (const half of [accepted.slice(0, middle), accepted.slice(middle)]) {
      const part = await scoreRows(model, plan, half.map((i) => rows[i]!));
      scoredRows.push(...part.rows.map((i) => half[i]!));
      part.columns.forEach((values, c) => columns[c]!.push(...values));
      failed.push(...part.rejected.map((r) => ({ row: half[r.row]!, reason: r.reason })));
    }
    return { rows: scoredRows, columns, rejected: failed };
  }
}
