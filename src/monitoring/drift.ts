import type pg from 'pg';
import { z } from 'zod';
import { describe } from '../errors.js';
import type { Logger } from '../log.js';
import type { ClaimedRow } from '../queue/claimed-row.js';
import type { Plan } from '../scoring/plan.js';
import type { Scored } from '../scoring/score.js';
import { count, emptyCounts, summarize, summarySchema, type Counts, type Summary } from './summary.js';

/** A model version's baseline as the worker reads it from ml._baselines. */
const baselineRow = z.object({
  ref: z.string(),
  inputs: z.record(z.string(), summarySchema),
  outputs: z.record(z.string(), summarySchema).nullable(),
});
type Baseline = z.infer<typeof baselineRow>;

const READ_BASELINES = `
  SELECT b.model || '@' || b.version AS ref, b.inputs, b.outputs FROM ml._baselines b
   WHERE b.model || '@' || b.version = ANY ($1::text[])`;
const BASELINE_ROWS = "SELECT ml._setting('baseline_rows')::int AS n";
const STORE_BASELINE = 'SELECT ml._store_baseline($1, $2, $3, $4, $5, $6)';
const ADD_COUNTS = 'SELECT ml._add_drift_counts($1, $2, $3, $4, $5, $6, $7, $8, $9)';

interface Feature {
  readonly name: string;
  readonly pick: (values: readonly unknown[]) => unknown;
}

/**
 * The features of a deployment's inputs, named as ml._model_features names them: one per value
 * of each input tensor, 'X[0]', 'X[1]', … for an [N, k] input, the input's name for an [N] one.
 * Row values come in the plan's source order; an array column feeds a whole input.
 */
export function inputFeatures(plan: Plan): Feature[] {
  const features: Feature[] = [];
  let offset = 0;
  for (const input of plan.inputs) {
    if (input.array) {
      const at = offset;
      for (let j = 0; j < (input.width ?? 0); j++) {
        features.push({ name: `${input.name}[${j}]`, pick: (values) => (values[at] as readonly unknown[] | null)?.[j] ?? null });
      }
      offset += 1;
    } else {
      input.sources.forEach((_, j) => {
        const at = offset + j;
        features.push({ name: input.rank === 2 ? `${input.name}[${j}]` : input.name, pick: (values) => values[at] });
      });
      offset += input.sources.length;
    }
  }
  return features;
}

/**
 * The output features of a deployment: one per prediction column that holds one value, named as
 * the outputs mapping names it: 'label' for a one-value output, 'probabilities[1]' for one value
 * of a wider one.
 */
export function outputFeatures(plan: Plan): { name: string; column: number }[] {
  return plan.outputs.flatMap((o, column) =>
    o.array ? [] : [{ name: o.width === 1 ? o.output : `${o.output}[${o.index ?? 0}]`, column }]);
}

interface Collecting {
  rows: number;
  readonly inputs: Map<string, unknown[]>;
  readonly outputs: Map<string, unknown[]>;
}

/**
 * Data drift, in the worker: each scored batch's input and output values are binned by the
 * baseline of the version that scored them and added up per minute (flushed every few seconds
 * to ml._drift_counts, which ml.drift sums). A version without a baseline (or without output
 * summaries) gets one from its first `baseline_rows` rows. Cheap: a binary search per value.
 *
 * Every worker bins by the one baseline stored in ml._baselines, never by a summary of its own:
 * with two workers, each summarised its own first rows, only the first summary stored was kept,
 * and the other worker's counts, binned by different edges, gave a 0/1 output a PSI of 6.81 on
 * unchanged traffic. A worker that completes a first-rows summary stores it, then reads back
 * what is stored (its own, or another worker's that came first) and counts from then on.
 */
export class DriftRecorder {
  #baselines = new Map<string, Baseline>();
  #baselineRows = 1000;
  readonly #collecting = new Map<string, Collecting>();
  readonly #ready: { ref: string; model: string; version: number; rows: number; inputs: Record<string, Summary> | null; outputs: Record<string, Summary> }[] = [];
  #pending = new Map<string, { deploymentId: number; model: string; kind: 'input' | 'output'; feature: string; minute: Date; counts: Counts }>();
  #timer: NodeJS.Timeout | undefined;
  #flushing: Promise<void> | undefined;

  constructor(
    private readonly pool: pg.Pool,
    private readonly log: Logger,
  ) {}

  /** Reads the baselines of the versions in use (on every reload of the deployments). */
  async load(refs: readonly string[]): Promise<void> {
    const [{ rows }, setting] = await Promise.all([
      this.pool.query(READ_BASELINES, [refs]),
      this.pool.query<{ n: number }>(BASELINE_ROWS).catch(() => ({ rows: [{ n: 1000 }] })),
    ]);
    this.#baselineRows = setting.rows[0]?.n ?? 1000;
    const baselines = new Map<string, Baseline>();
    for (const row of rows) {
      const parsed = baselineRow.safeParse(row);
      if (parsed.success) baselines.set(parsed.data.ref, parsed.data);
      else this.log.warn({ model: (row as { ref: string }).ref }, 'baseline not readable, ignored');
    }
    this.#baselines = baselines;
    for (const [ref, baseline] of baselines) if (baseline.outputs) this.#collecting.delete(ref);
    // A version no deployment uses any more keeps nothing here: not its count, nor the values of
    // a first-rows baseline it did not finish (up to baseline_rows rows of every feature).
    const inUse = new Set(refs);
    for (const ref of this.#collecting.keys()) if (!inUse.has(ref)) this.#collecting.delete(ref);
  }

  start(everyMs = 5_000): void {
    this.#timer = setInterval(() => void this.flush(), everyMs);
    this.#timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.#timer);
    await this.flush();
  }

  /** Counts one scored group of rows (called in the batch, before its write-back). */
  observe(deploymentId: number, plan: Plan, ref: string, rows: readonly ClaimedRow[], scored: Scored): void {
    if (!plan.drift) return;
    const baseline = this.#baselines.get(ref);
    const inputs = inputFeatures(plan);
    const outputs = outputFeatures(plan);
    if (!baseline || !baseline.outputs) this.#collect(ref, baseline, inputs, outputs, rows, scored);
    if (!baseline) return;
    const minute = new Date(Math.floor(Date.now() / 60_000) * 60_000);
    for (const feature of inputs) {
      const summary = baseline.inputs[feature.name];
      if (!summary) continue;
      const counts = this.#counts(deploymentId, ref, 'input', feature.name, minute, summary);
      for (const row of rows) count(summary, counts, feature.pick(row.values));
    }
    for (const feature of outputs) {
      const summary = baseline.outputs?.[feature.name];
      if (!summary) continue;
      const counts = this.#counts(deploymentId, ref, 'output', feature.name, minute, summary);
      for (const value of scored.columns[feature.column] ?? []) count(summary, counts, value);
    }
  }

  #counts(deploymentId: number, model: string, kind: 'input' | 'output', feature: string, minute: Date, summary: Summary): Counts {
    const key = `${deploymentId}\u0000${model}\u0000${kind}\u0000${feature}\u0000${minute.getTime()}`;
    let entry = this.#pending.get(key);
    if (!entry) this.#pending.set(key, (entry = { deploymentId, model, kind, feature, minute, counts: emptyCounts(summary) }));
    return entry.counts;
  }

  /** Keeps the first rows of a version without a (complete) baseline, until there are enough. */
  #collect(ref: string, baseline: Baseline | undefined, inputs: Feature[], outputs: { name: string; column: number }[], rows: readonly ClaimedRow[], scored: Scored): void {
    let collecting = this.#collecting.get(ref);
    if (!collecting) this.#collecting.set(ref, (collecting = { rows: 0, inputs: new Map(), outputs: new Map() }));
    if (collecting.rows >= this.#baselineRows) return;
    const take = Math.min(rows.length, this.#baselineRows - collecting.rows);
    if (!baseline) {
      for (const feature of inputs) {
        const values = collecting.inputs.get(feature.name) ?? [];
        for (let r = 0; r < take; r++) values.push(feature.pick(rows[r]!.values));
        collecting.inputs.set(feature.name, values);
      }
    }
    for (const feature of outputs) {
      const values = collecting.outputs.get(feature.name) ?? [];
      values.push(...(scored.columns[feature.column] ?? []).slice(0, take));
      collecting.outputs.set(feature.name, values);
    }
    collecting.rows += take;
    if (collecting.rows < this.#baselineRows) return;
    const at = ref.lastIndexOf('@');
    const summaries = (features: Map<string, unknown[]>) => Object.fromEntries([...features].map(([name, values]) => [name, summarize(values)]));
    const ready = {
      ref,
      model: ref.slice(0, at),
      version: Number(ref.slice(at + 1)),
      rows: collecting.rows,
      inputs: baseline ? null : summaries(collecting.inputs),
      outputs: summaries(collecting.outputs),
    };
    this.#ready.push(ready);
    // The values are summarised: only the count stays, so the version is not collected again.
    collecting.inputs.clear();
    collecting.outputs.clear();
    // Counting starts once the stored baseline is read back (see #flush): soon, not in 5 s.
    void this.flush();
  }

  /** Writes the minute counts and any baseline the first rows completed. */
  flush(): Promise<void> {
    this.#flushing ??= this.#flush()
      .catch((error: unknown) => this.log.warn({ err: error }, `drift counts not written: ${describe(error)}`))
      .finally(() => (this.#flushing = undefined));
    return this.#flushing;
  }

  /** Reads the baseline stored for a version, which the worker bins by from now on. */
  async #readBack(ref: string): Promise<void> {
    const { rows } = await this.pool.query(READ_BASELINES, [[ref]]);
    const parsed = baselineRow.safeParse(rows[0]);
    if (parsed.success) this.#baselines.set(ref, parsed.data);
    else this.log.warn({ model: ref }, 'stored baseline not readable, ignored');
  }

  async #flush(): Promise<void> {
    // A summary leaves the list once stored: a failed flush stores it the next time.
    for (let ready = this.#ready[0]; ready; ready = this.#ready[0]) {
      const { rows } = await this.pool.query<{ stored: boolean }>(`${STORE_BASELINE} AS stored`, [ready.model, ready.version, 'first_rows',
        ready.rows, JSON.stringify(ready.inputs ?? {}), JSON.stringify(ready.outputs)]);
      this.#ready.shift();
      if (rows[0]?.stored) this.log.info({ model: ready.ref, rows: ready.rows }, 'baseline taken from the first rows scored');
      await this.#readBack(ready.ref);
    }
    if (this.#pending.size === 0) return;
    const entries = [...this.#pending.values()];
    this.#pending = new Map();
    await this.pool.query(ADD_COUNTS, [
      entries.map((e) => e.deploymentId),
      entries.map((e) => e.model),
      entries.map((e) => e.kind),
      entries.map((e) => e.feature),
      entries.map((e) => e.minute),
      entries.map((e) => `{${e.counts.counts.join(',')}}`),
      entries.map((e) => e.counts.nulls),
      entries.map((e) => e.counts.outOfRange),
      entries.map((e) => e.counts.rows),
    ]);
  }
}
