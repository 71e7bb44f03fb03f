import { summarize, type Summary } from './stats.js';

export type ModelKey = 'logreg' | 'gbm';

export interface Target {
  readonly op: '>=' | '<=';
  readonly value: number;
  /** How the target reads in the report, e.g. "≥ 0.70". */
  readonly text?: string;
}

export interface Metric extends Summary {
  readonly scenario: string;
  readonly model: ModelKey | '-';
  readonly name: string;
  readonly unit: string;
  readonly target?: Target;
  /** Undefined when the metric has no target. */
  readonly met?: boolean;
  readonly note?: string;
  /** The issue goal this metric answers (bench/lib/goals.ts), e.g. 'copy'. */
  readonly goal?: string;
}

export interface ScenarioOutcome {
  readonly id: string;
  readonly title: string;
  readonly metrics: Metric[];
  /** Method and caveats, printed in the report under the scenario. */
  readonly notes: string[];
  readonly error?: string;
  readonly seconds: number;
}

export function metric(
  scenario: string,
  model: ModelKey | '-',
  name: string,
  unit: string,
  values: readonly number[],
  target?: Target,
  note?: string,
): Metric {
  const s = summarize(values.filter((v) => Number.isFinite(v)));
  const met = target && Number.isFinite(s.median) ? (target.op === '>=' ? s.median >= target.value : s.median <= target.value) : undefined;
  return { scenario, model, name, unit, ...s, ...(target ? { target } : {}), ...(met === undefined ? {} : { met }), ...(note ? { note } : {}) };
}

export function targetText(t: Target): string {
  return t.text ?? `${t.op === '>=' ? '≥' : '≤'} ${t.value}`;
}

/** Numbers as people read them: 3 significant digits, thousands separated. */
export function fmt(n: number): string {
  if (!Number.isFinite(n)) return '–';
  const abs = Math.abs(n);
  if (abs >= 1000) return Math.round(n).toLocaleString('en-US');
  if (abs >= 100) return n.toFixed(0);
  if (abs >= 10) return n.toFixed(1);
  if (abs >= 1) return n.toFixed(2);
  return n.toPrecision(2);
}
