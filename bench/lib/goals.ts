/**
 * The goals of the performance issues (Step 7, and Step 9's cost per prediction), each read from the run: from the metrics a scenario
 * tagged with the goal's id (their own targets decide met / not met), or, for scenario 11, from the
 * ratios it leaves in ctx.shared (`contenders.<model>.<rows>.ranged` / `.writeLimit`).
 */
import { fmt, targetText, type Metric, type ModelKey, type ScenarioOutcome, type Target } from './result.js';

type GoalModel = ModelKey | '-';

interface Goal {
  readonly id: string;
  readonly scenario: string;
  readonly text: string;
  /** The models the goal asks for ('-': one figure for both). */
  readonly models: readonly GoalModel[];
  /** For goals read from ctx.shared: the key's last part, and the target. */
  readonly shared?: { readonly suffix: string; readonly target: Target };
}

const BOTH: readonly GoalModel[] = ['logreg', 'gbm'];

export const GOALS: readonly Goal[] = [
  { id: 'contenders.ranged', scenario: '11', text: 'Backlog drain, 300k and 1M rows: notify ÷ hand-written batch job (ranged UPDATE)', models: BOTH, shared: { suffix: 'ranged', target: { op: '>=', value: 1.2 } } },
  { id: 'contenders.writeLimit', scenario: '11', text: 'Backlog drain, 300k and 1M rows: notify ÷ write-path limit', models: BOTH, shared: { suffix: 'writeLimit', target: { op: '>=', value: 0.5 } } },
  { id: 'contenders.cpu', scenario: '11', text: 'Backlog drain, 300k and 1M rows: Postgres CPU per row, pgscore ÷ batch job (ranged)', models: BOTH, shared: { suffix: 'cpu', target: { op: '<=', value: 1 } } },
  { id: 'oltp16', scenario: '3', text: 'OLTP ingest, 16 clients: with a deployment and a worker ÷ without', models: BOTH },
  { id: 'oltp16capture', scenario: '3', text: 'OLTP ingest, 16 clients: the capture alone (no worker) ÷ without', models: BOTH },
  { id: 'oltp16wal', scenario: '3', text: 'OLTP ingest, 16 clients, capture from the WAL: with a deployment and a worker ÷ without', models: BOTH },
  { id: 'oltp16capturewal', scenario: '3', text: 'OLTP ingest, 16 clients, capture from the WAL: the capture alone (no reader) ÷ without', models: BOTH },
  { id: 'copy', scenario: '2', text: 'Bulk COPY: with ÷ without deployment', models: BOTH },
  { id: 'kafkaOverNotify', scenario: '4', text: 'Backlog drain: Kafka ÷ notify', models: BOTH },
  { id: 'kafkaP99', scenario: '5', text: 'Kafka commit→prediction p99 at 1k rows/s', models: BOTH },
  { id: 'notifyP50', scenario: '5', text: 'Notify commit→prediction p50 at 1k rows/s', models: BOTH },
  { id: 'notifyP99', scenario: '5', text: 'Notify commit→prediction p99 at 1k rows/s', models: BOTH },
  { id: 'rssPredictions', scenario: '7', text: 'Worker RSS growth over 10M predictions', models: ['-'] },
  { id: 'rssPromotions', scenario: '7', text: 'Worker RSS growth over 100 promotions', models: ['-'] },
  { id: 'scaleOut', scenario: '12', text: 'Scale-out: projected rows/s with 16 Kafka workers, and what runs out first', models: BOTH },
];

export interface GoalRow {
  readonly goal: string;
  readonly scenario: string;
  readonly model: GoalModel;
  /** The figure, or "not measured in this run". */
  readonly measured: string;
  /** What was measured, when it differs from the goal's wording (a quick run's sizes, say). */
  readonly detail: string;
  readonly target: string;
  readonly status: 'met' | 'not met' | 'not measured' | 'no target';
}

const NOT_MEASURED = 'not measured in this run';

function fromMetric(goal: Goal, m: Metric): GoalRow {
  const spread = m.reps > 1 ? ` (${fmt(m.min)} – ${fmt(m.max)}, n=${m.reps})` : '';
  return {
    goal: goal.text,
    scenario: goal.scenario,
    model: m.model,
    measured: Number.isFinite(m.median) ? `${fmt(m.median)} ${m.unit}${spread}` : NOT_MEASURED,
    detail: [m.name, m.note].filter(Boolean).join('; '),
    target: m.target ? targetText(m.target) : '—',
    status: !Number.isFinite(m.median) ? 'not measured' : m.met === undefined ? 'no target' : m.met ? 'met' : 'not met',
  };
}

/** `contenders.<model>.<rows>.<suffix>`, read without assuming more of scenario 11's keys than that. */
function fromShared(goal: Goal & { shared: NonNullable<Goal['shared']> }, shared: ReadonlyMap<string, number>): GoalRow[] {
  const rows: GoalRow[] = [];
  for (const [key, value] of shared) {
    const parts = key.split('.');
    if (parts.length !== 4 || parts[0] !== 'contenders' || parts[3] !== goal.shared.suffix) continue;
    const [, model, size] = parts as [string, string, string, string];
    const { op, value: bound } = goal.shared.target;
    const sizeText = /^\d+$/.test(size) ? Number(size).toLocaleString('en-US') : size;
    rows.push({
      goal: goal.text,
      scenario: goal.scenario,
      model: model === 'logreg' || model === 'gbm' ? model : '-',
      measured: Number.isFinite(value) ? `${fmt(value)} ratio` : NOT_MEASURED,
      detail: `${sizeText} rows${model === 'logreg' || model === 'gbm' ? '' : ` (${model})`}`,
      target: targetText(goal.shared.target),
      status: !Number.isFinite(value) ? 'not measured' : (op === '>=' ? value >= bound : value <= bound) ? 'met' : 'not met',
    });
  }
  return rows;
}

export function goalRows(outcomes: readonly ScenarioOutcome[], shared: ReadonlyMap<string, number>): GoalRow[] {
  const metrics = outcomes.flatMap((o) => o.metrics);
  return GOALS.flatMap((goal) => {
    const found = goal.shared ? fromShared({ ...goal, shared: goal.shared }, shared) : metrics.filter((m) => m.goal === goal.id).map((m) => fromMetric(goal, m));
    const missing = goal.models.filter((model) => !found.some((row) => row.model === model));
    const target = goal.shared ? targetText(goal.shared.target) : '';
    return [
      ...found,
      ...missing.map((model): GoalRow => ({ goal: goal.text, scenario: goal.scenario, model, measured: NOT_MEASURED, detail: '', target, status: 'not measured' })),
    ];
  });
}

const MODEL_NAMES: Record<GoalModel, string> = { logreg: 'logistic', gbm: '100-tree GBM', '-': 'both' };
const MARKS: Record<GoalRow['status'], string> = { met: '✅ met', 'not met': '❌ **not met**', 'not measured': '–', 'no target': '(no target)' };

export function goalsMarkdown(rows: readonly GoalRow[]): string {
  const met = rows.filter((r) => r.status === 'met').length;
  const judged = rows.filter((r) => r.status === 'met' || r.status === 'not met').length;
  const lines = [
    '## Goals (issue: Step 7)',
    '',
    `${met} of ${judged} measured goals met; ${rows.filter((r) => r.status === 'not measured').length} not measured in this run. A quick run measures smaller sizes than the goals name (see "measured as").`,
    '',
    '| goal | scenario | model | measured | measured as | target | |',
    '|---|---|---|---:|---|---|---|',
  ];
  for (const r of rows) lines.push(`| ${r.goal} | ${r.scenario} | ${MODEL_NAMES[r.model]} | ${r.measured} | ${r.detail} | ${r.target} | ${MARKS[r.status]} |`);
  return lines.join('\n');
}
