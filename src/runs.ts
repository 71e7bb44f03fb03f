import { setTimeout as sleep } from 'node:timers/promises';
import cliProgress from 'cli-progress';
import Table from 'cli-table3';
import type pg from 'pg';

/** One row of ml.runs, as the CLI reads it. */
export interface RunRow {
  run: string;
  deployment: string;
  kind: string;
  model: string;
  state: 'running' | 'finished' | 'cancelled';
  rows: string;
  scored: string;
  progress: number;
  rows_per_second: number | null;
  eta: string | null;
  dead_letters: string;
  started_at: Date;
  finished_at: Date | null;
}

const SELECT_RUNS = `
  SELECT run, deployment, kind, model, state, rows, scored, progress, rows_per_second, eta::text AS eta,
         dead_letters, started_at, finished_at
    FROM ml.runs`;

export async function readRuns(db: pg.Pool, filter: { deployment?: string; limit?: number } = {}): Promise<RunRow[]> {
  const { rows } = await db.query<RunRow>(`${SELECT_RUNS} WHERE $1::text IS NULL OR deployment = $1 ORDER BY run DESC LIMIT $2`,
    [filter.deployment ?? null, filter.limit ?? 20]);
  return rows;
}

export async function readRunsById(db: pg.Pool, ids: readonly string[]): Promise<RunRow[]> {
  const { rows } = await db.query<RunRow>(`${SELECT_RUNS} WHERE run = ANY ($1::bigint[]) ORDER BY run`, [ids]);
  return rows;
}

/** ml.runs as a table for a terminal. */
export function formatRuns(rows: readonly RunRow[]): string {
  if (rows.length === 0) return 'no runs (see ml.run_now, ml.backfill and batch deployments in README.md)';
  const table = new Table({
    head: ['run', 'deployment', 'kind', 'model', 'state', 'scored', 'progress', 'rows/s', 'dead letters', 'started', 'took'],
    style: { head: [], border: [] },
  });
  for (const row of rows) {
    const took = row.finished_at ? `${((row.finished_at.getTime() - row.started_at.getTime()) / 1000).toFixed(1)} s` : '-';
    table.push([
      row.run, row.deployment, row.kind, row.model, row.state, `${row.scored}/${row.rows}`,
      `${(row.progress * 100).toFixed(1)} %`, row.rows_per_second === null ? '-' : Math.round(row.rows_per_second),
      row.dead_letters, row.started_at.toISOString().replace('T', ' ').slice(0, 19), took,
    ]);
  }
  return table.toString();
}

/**
 * Shows a progress bar per run (rows scored of the run's rows, rate, ETA, dead letters) until
 * every one has finished or was cancelled; returns their final rows. Off a terminal the bars
 * are printed as lines every few seconds.
 */
export async function watchRuns(db: pg.Pool, ids: readonly string[], out: NodeJS.WriteStream, everyMs = 500): Promise<RunRow[]> {
  const bars = new cliProgress.MultiBar({
    stream: out,
    format: '{deployment} run {run} |{bar}| {percentage}% | {value}/{total} rows | {speed} rows/s | ETA {eta_formatted} | dead letters {dead}',
    hideCursor: true,
    noTTYOutput: !out.isTTY,
    notTTYSchedule: 5_000,
    etaBuffer: 20,
  }, cliProgress.Presets.shades_classic);
  const started = new Map<string, cliProgress.SingleBar>();
  try {
    for (;;) {
      const runs = await readRunsById(db, ids);
      for (const run of runs) {
        const payload = { deployment: run.deployment, run: run.run, dead: run.dead_letters, speed: Math.round(run.rows_per_second ?? 0) };
        const bar = started.get(run.run) ?? bars.create(Number(run.rows), Number(run.scored), payload);
        started.set(run.run, bar);
        bar.update(Number(run.scored), payload);
      }
      if (runs.every((run) => run.state !== 'running')) return runs;
      await sleep(everyMs);
    }
  } finally {
    bars.stop();
  }
}

/** The running runs' ids. */
export async function runningRuns(db: pg.Pool, deployment?: string): Promise<string[]> {
  const { rows } = await db.query<{ run: string }>(`SELECT run FROM ml.runs WHERE state = 'running' AND ($1::text IS NULL OR deployment = $1)`,
    [deployment ?? null]);
  return rows.map((row) => row.run);
}
