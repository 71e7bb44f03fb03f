import { z } from 'zod';

/**
 * Compact summaries of a feature's values, as ml._baselines stores them (see
 * sql/functions/065_drift.sql, whose ml.set_baseline computes the same in SQL): numbers by the
 * deciles of the baseline (9 cut points, 10 buckets), anything else by its 20 most frequent
 * values and the rest.
 */
export const summarySchema = z.discriminatedUnion('kind', [
  z.object({
    kind: z.literal('numeric'),
    edges: z.array(z.number()),
    freqs: z.array(z.number().nullable()),
    min: z.number().nullable(),
    max: z.number().nullable(),
    nulls: z.number(),
  }),
  z.object({
    kind: z.literal('categorical'),
    categories: z.array(z.string()),
    /** One share per category, then the share of every other value. */
    freqs: z.array(z.number().nullable()),
    nulls: z.number(),
  }),
]);
export type Summary = z.infer<typeof summarySchema>;

const DECILES = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9];
const TOP_CATEGORIES = 20;

/** A missing value: SQL NULL, or a float NaN. */
export function isMissing(value: unknown): boolean {
  return value === null || value === undefined || (typeof value === 'number' && Number.isNaN(value));
}

/** Postgres width_bucket(value, edges): how many cut points are at or below the value (0–9). */
export function bucketOf(edges: readonly number[], value: number): number {
  let lo = 0;
  let hi = edges.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (edges[mid]! <= value) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** percentile_cont: the linear interpolation between the two closest ranks. */
function quantile(sorted: readonly number[], q: number): number {
  const at = q * (sorted.length - 1);
  const below = Math.floor(at);
  const above = Math.min(below + 1, sorted.length - 1);
  return sorted[below]! + (sorted[above]! - sorted[below]!) * (at - below);
}

/** Summarises one feature's values: numeric when every present value is a number (or a numeric string). */
export function summarize(values: readonly unknown[]): Summary {
  const present = values.filter((v) => !isMissing(v));
  const nulls = values.length - present.length;
  const numbers = present.map((v) => (typeof v === 'number' ? v : typeof v === 'string' && v.trim() !== '' ? Number(v) : Number.NaN));
  if (present.length > 0 && numbers.every((n) => Number.isFinite(n)) && present.every((v) => typeof v !== 'boolean')) {
    const sorted = [...numbers].sort((a, b) => a - b);
    const edges = DECILES.map((q) => quantile(sorted, q));
    const counts = new Array<number>(edges.length + 1).fill(0);
    for (const n of numbers) counts[bucketOf(edges, n)]! += 1;
    return { kind: 'numeric', edges, freqs: counts.map((c) => c / numbers.length), min: sorted[0]!, max: sorted.at(-1)!, nulls };
  }
  const counts = new Map<string, number>();
  for (const v of present) counts.set(String(v), (counts.get(String(v)) ?? 0) + 1);
  const top = [...counts].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1)).slice(0, TOP_CATEGORIES);
  const inTop = top.reduce((sum, [, c]) => sum + c, 0);
  const share = (c: number) => (present.length ? c / present.length : null);
  return { kind: 'categorical', categories: top.map(([v]) => v), freqs: [...top.map(([, c]) => share(c)), share(present.length - inTop)], nulls };
}

/** Live counts of one feature, in the buckets of its baseline summary. */
export interface Counts {
  readonly counts: number[];
  nulls: number;
  outOfRange: number;
  rows: number;
}

export function emptyCounts(summary: Summary): Counts {
  const buckets = summary.kind === 'numeric' ? summary.edges.length + 1 : summary.categories.length + 1;
  return { counts: new Array<number>(buckets).fill(0), nulls: 0, outOfRange: 0, rows: 0 };
}

/** Adds one live value to the counts of its feature. */
export function count(summary: Summary, counts: Counts, value: unknown): void {
  counts.rows += 1;
  if (isMissing(value)) {
    counts.nulls += 1;
    return;
  }
  if (summary.kind === 'numeric') {
    const n = typeof value === 'number' ? value : Number(value);
    if (!Number.isFinite(n)) {
      counts.nulls += 1;
      return;
    }
    if ((summary.min !== null && n < summary.min) || (summary.max !== null && n > summary.max)) counts.outOfRange += 1;
    counts.counts[bucketOf(summary.edges, n)]! += 1;
  } else {
    const at = summary.categories.indexOf(String(value));
    if (at < 0) counts.outOfRange += 1;
    counts.counts[at < 0 ? summary.categories.length : at]! += 1;
  }
}
