import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import Table from 'cli-table3';
import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';
import { goalRows, goalsMarkdown } from './goals.js';
import { fmt, targetText, type Metric, type ScenarioOutcome } from './result.js';

export interface RunInfo {
  readonly date: string;
  readonly mode: 'quick' | 'full';
  readonly startedAt: string;
  readonly seconds: number;
  readonly machine: { cpus: number; cpuModel: string; memGiB: number; node: string; postgres: string; os: string; loadAvg: string };
  readonly database: string;
  /** SHOW of the tuned and the durability settings at the start of the run (bench/lib/server.ts). */
  readonly settings: Readonly<Record<string, string>>;
  readonly kafka: string;
  /** How the run was started, e.g. `npm run bench -- --quick --pg15`. */
  readonly command: string;
}

const status = (m: Metric) => (m.met === undefined ? '' : m.met ? 'met' : 'NOT MET');
const range = (m: Metric) => (m.reps > 1 ? `${fmt(m.min)} – ${fmt(m.max)}` : '');

export function printTable(outcomes: readonly ScenarioOutcome[]): void {
  const table = new Table({
    head: ['scenario', 'model', 'metric', 'median', 'min – max', 'n', 'target', 'status'],
    style: { head: [], border: [] },
    chars: { mid: '', 'left-mid': '', 'mid-mid': '', 'right-mid': '' },
  });
  for (const o of outcomes) {
    if (o.error) table.push([o.id, '', `FAILED: ${o.error.split('\n')[0]!.slice(0, 100)}`, '', '', '', '', 'ERROR']);
    for (const m of o.metrics) {
      table.push([m.scenario, m.model, m.name, `${fmt(m.median)} ${m.unit}`, range(m), m.reps, m.target ? targetText(m.target) : '', status(m)]);
    }
  }
  process.stdout.write(`${table.toString()}\n`);
}

/** How a metric stands against its target: > 1 is met (value/target for ≥, target/value for ≤). */
function headroom(m: Metric, v: number): number {
  if (!m.target) return Number.NaN;
  return m.target.op === '>=' ? v / m.target.value : m.target.value / v;
}

async function toSvg(spec: TopLevelSpec): Promise<string> {
  const { spec: compiled } = compile(spec);
  const view = new vega.View(vega.parse(compiled), { renderer: 'none' });
  const svg = await view.toSVG();
  view.finalize();
  return svg;
}

const MODEL_NAMES: Record<string, string> = { logreg: 'logistic', gbm: '100-tree GBM', '-': 'both' };

export function targetsChart(metrics: readonly Metric[]): TopLevelSpec {
  const values = metrics
    .filter((m) => m.target && Number.isFinite(m.median))
    .map((m) => {
      const lo = headroom(m, m.target!.op === '>=' ? m.min : m.max);
      const hi = headroom(m, m.target!.op === '>=' ? m.max : m.min);
      return {
        label: `${m.scenario.replace(/^\d+ /, '')}: ${m.name} (${MODEL_NAMES[m.model]})`,
        headroom: headroom(m, m.median),
        lo,
        hi,
        status: m.met ? 'met' : 'not met',
        detail: `${fmt(m.median)} ${m.unit} vs ${targetText(m.target!)}`,
      };
    });
  const y = { field: 'label', type: 'nominal', sort: null, title: null, axis: { labelLimit: 460 } };
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { text: 'Where pgscore stands against each target', subtitle: 'median ÷ target (for "at most" targets: target ÷ median); right of the line = met; whiskers = min–max', anchor: 'start' },
    width: 420,
    data: { values },
    layer: [
      {
        mark: { type: 'bar', height: 12 },
        encoding: {
          y,
          x: { field: 'headroom', type: 'quantitative', scale: { type: 'log', domain: [0.05, 20] }, title: 'headroom (log scale, 1 = exactly on target)' },
          color: { field: 'status', type: 'nominal', scale: { domain: ['met', 'not met'], range: ['#2e7d32', '#c62828'] }, title: null },
        },
      },
      { mark: { type: 'rule', color: '#555' }, encoding: { y, x: { field: 'lo', type: 'quantitative' }, x2: { field: 'hi' } } },
      { mark: { type: 'text', align: 'left', dx: 4, fontSize: 10 }, encoding: { y, x: { field: 'hi', type: 'quantitative' }, text: { field: 'detail' } } },
      { mark: { type: 'rule', color: 'black', strokeDash: [4, 3] }, encoding: { x: { datum: 1 } } },
    ],
  } as TopLevelSpec;
}

export function throughputChart(shared: ReadonlyMap<string, number>): TopLevelSpec {
  const approaches: [string, string][] = [
    ['raw.%.1000', 'onnxruntime alone, batch 1000 (ceiling)'],
    ['drain.notify.%', 'pgscore notify worker (backlog drain)'],
    ['drain.kafka.%', 'pgscore via Kafka (relay + worker)'],
    ['rest.batch.%', 'REST service, batched loop'],
    ['rest.row.%', 'REST service, one request per row'],
  ];
  const values = approaches.flatMap(([key, approach]) =>
    (['logreg', 'gbm'] as const).flatMap((model) => {
      const v = shared.get(key.replace('%', model));
      return v !== undefined && Number.isFinite(v) ? [{ approach, model: MODEL_NAMES[model], rate: v, label: fmt(v) }] : [];
    }),
  );
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { text: 'Rows scored per second, same machine, same run', subtitle: 'medians; log scale', anchor: 'start' },
    data: { values },
    facet: { row: { field: 'model', type: 'nominal', title: null, header: { labelAngle: 0, labelAlign: 'left', labelFontWeight: 'bold' } } },
    spec: {
      width: 420,
      encoding: { y: { field: 'approach', type: 'nominal', sort: approaches.map((a) => a[1]), title: null, axis: { labelLimit: 420 } } },
      layer: [
        {
          mark: { type: 'bar', height: 14 },
          encoding: {
            x: { field: 'rate', type: 'quantitative', scale: { type: 'log' }, title: 'rows/s (log scale)' },
            color: { field: 'approach', type: 'nominal', legend: null, scale: { range: ['#9e9e9e', '#1565c0', '#5e92f3', '#ef6c00', '#ffb74d'] }, sort: approaches.map((a) => a[1]) },
          },
        },
        { mark: { type: 'text', align: 'left', dx: 3, fontSize: 10 }, encoding: { x: { field: 'rate', type: 'quantitative' }, text: { field: 'label' } } },
      ],
    },
  } as TopLevelSpec;
}

function markdownTable(metrics: readonly Metric[]): string {
  const lines = ['| model | metric | median | min – max | n | target | |', '|---|---|---:|---:|---:|---|---|'];
  for (const m of metrics) {
    const mark = m.met === undefined ? '' : m.met ? '✅ met' : '❌ **not met**';
    lines.push(`| ${MODEL_NAMES[m.model]} | ${m.name} | ${fmt(m.median)} ${m.unit} | ${range(m)} | ${m.reps} | ${m.target ? targetText(m.target) : ''} | ${mark} |`);
  }
  return lines.join('\n');
}

export async function writeReport(dir: string, base: string, info: RunInfo, outcomes: readonly ScenarioOutcome[], shared: ReadonlyMap<string, number>): Promise<{ json: string; md: string }> {
  await mkdir(dir, { recursive: true });
  const all = outcomes.flatMap((o) => o.metrics);
  const targeted = all.filter((m) => m.target);
  const goals = goalRows(outcomes, shared);
  const json = path.join(dir, `${base}.json`);
  await writeFile(json, `${JSON.stringify({ ...info, goals, scenarios: outcomes, reference: Object.fromEntries(shared) }, null, 2)}\n`);

  const charts: string[] = [];
  for (const [name, spec] of [['targets', targetsChart(all)], ['throughput', throughputChart(shared)]] as const) {
    try {
      await writeFile(path.join(dir, `${base}-${name}.svg`), await toSvg(spec));
      charts.push(`![${name}](./${base}-${name}.svg)`);
    } catch (error) {
      charts.push(`(chart ${name} could not be rendered: ${(error as Error).message})`);
    }
  }

  const met = targeted.filter((m) => m.met).length;
  const failed = outcomes.filter((o) => o.error);
  const md = [
    `# pgscore benchmark — ${info.date} (${info.mode} run)`,
    '',
    `${met} of ${targeted.length} targets met${failed.length ? `; **${failed.length} scenario(s) failed**: ${failed.map((o) => o.id).join(', ')}` : ''}. Every figure is the median of the repetitions (n) with min and max; ratios are taken within one repetition, side by side, because absolute numbers drift on a shared machine and ratios hold.`,
    '',
    `Machine: ${info.machine.cpus} × ${info.machine.cpuModel}, ${info.machine.memGiB} GiB, ${info.machine.os}; Node ${info.machine.node}; ${info.machine.postgres} (${info.database}); Kafka: ${info.kafka}. Load average (1 min) at start / end: ${info.machine.loadAvg} — anything above ~0.5 at the start means other work shared the cores. Run took ${Math.round(info.seconds)} s. Command: \`${info.command}\`.`,
    '',
    `Server settings (SHOW at the start of the run): ${Object.entries(info.settings).map(([name, value]) => `${name}=${value}`).join(', ')}.`,
    '',
    goalsMarkdown(goals),
    '',
    ...charts.flatMap((c) => [c, '']),
    '## Targets',
    '',
    markdownTable(targeted.map((m) => ({ ...m, name: `${m.scenario}: ${m.name}` }))),
    '',
    ...outcomes.flatMap((o) => [
      `## ${o.id}. ${o.title}`,
      '',
      ...(o.error ? ['**Failed:**', '', '```', o.error, '```', ''] : []),
      ...(o.metrics.length ? [markdownTable(o.metrics), ''] : []),
      ...o.notes.map((n) => `- ${n}`),
      '',
      `(${Math.round(o.seconds)} s)`,
      '',
    ]),
  ].join('\n');
  const mdPath = path.join(dir, `${base}.md`);
  await writeFile(mdPath, md);
  return { json, md: mdPath };
}
