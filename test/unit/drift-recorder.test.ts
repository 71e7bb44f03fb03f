import type pg from 'pg';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../../src/log.js';
import { DriftRecorder } from '../../src/monitoring/drift.js';
import type { ClaimedRow } from '../../src/queue/claimed-row.js';
import type { Plan } from '../../src/scoring/plan.js';
import { count, emptyCounts, summarize } from '../../src/monitoring/summary.js';

/** A pool that has no baselines, baseline_rows = 10, and records what is stored. */
function fakePool() {
  const stored: unknown[][] = [];
  const pool = {
    async query(text: string, values: unknown[] = []) {
      if (text.includes('baseline_rows')) return { rows: [{ n: 10 }] };
      if (text.includes('_store_baseline')) stored.push(values);
      return { rows: [] };
    },
  };
  return { pool: pool as unknown as pg.Pool, stored };
}

const rows = (n: number): ClaimedRow[] =>
  Array.from({ length: n }, (_, i) => ({ keys: [String(i)], ageMs: 0, xmin: '1', tid: '(0,1)', attempts: 0, values: [i] }));

describe('DriftRecorder', () => {
  it('forgets a first-rows baseline it had not finished once no deployment uses the version', async () => {
    const plan = { inputs: [{ name: 'x', sources: ['x'] }], outputs: [{ output: 'y', column: 'y' }] } as unknown as Plan;
    const drifting = { ...plan, drift: true } as Plan;
    const scored = (n: number) => ({ rows: rows(n).map((_, i) => i), columns: [rows(n).map((_, i) => i)], rejected: [] });
    const { pool, stored } = fakePool();
    const drift = new DriftRecorder(pool, createLogger('silent'));

    await drift.load(['m@1']);
    drift.observe(1, drifting, 'm@1', rows(6), scored(6));
    await drift.load(['m@2']); // promoted away before m@1 had 10 rows
    await drift.load(['m@1']); // and back
    drift.observe(1, drifting, 'm@1', rows(6), scored(6));
    await drift.flush();
    expect(stored).toEqual([]); // 6 rows since it came back, not 12

    drift.observe(1, drifting, 'm@1', rows(6), scored(6));
    await drift.flush();
    expect(stored.map((values) => values.slice(0, 4))).toEqual([['m', 1, 'first_rows', 10]]);
  });

  it('a worker whose own first rows lost the race counts against the stored baseline, not its own summary', async () => {
    // One database for two workers: the first baseline stored for a version is kept.
    const baselines = new Map<string, { ref: string; inputs: unknown; outputs: unknown }>();
    const added: unknown[][] = [];
    const database = {
      async query(text: string, values: unknown[] = []) {
        if (text.includes('baseline_rows')) return { rows: [{ n: 10 }] };
        if (text.includes('_store_baseline')) {
          const ref = `${String(values[0])}@${String(values[1])}`;
          if (baselines.has(ref)) return { rows: [{ stored: false }] };
          baselines.set(ref, { ref, inputs: JSON.parse(values[4] as string), outputs: JSON.parse(values[5] as string) });
          return { rows: [{ stored: true }] };
        }
        if (text.includes('ml._baselines')) return { rows: [...baselines.values()].filter((b) => (values[0] as string[]).includes(b.ref)) };
        if (text.includes('_add_drift_counts')) added.push(values);
        return { rows: [] };
      },
    } as unknown as pg.Pool;
    const plan = { inputs: [{ name: 'x', sources: ['x'] }], outputs: [{ output: 'y', column: 'y' }], drift: true } as unknown as Plan;
    const batch = (ys: number[]) => ({
      rows: rows(ys.length),
      scored: { rows: ys.map((_, i) => i), columns: [ys], rejected: [] },
    });
    // A 0/1 output: the two workers' first rows put the share of zeros either side of a decile.
    const firstA = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1];
    const firstB = [0, 0, 0, 0, 0, 0, 1, 1, 1, 1];
    const a = new DriftRecorder(database, createLogger('silent'));
    const b = new DriftRecorder(database, createLogger('silent'));
    await Promise.all([a.load(['m@1']), b.load(['m@1'])]);
    a.observe(1, plan, 'm@1', batch(firstA).rows, batch(firstA).scored);
    await a.flush();
    b.observe(1, plan, 'm@1', batch(firstB).rows, batch(firstB).scored);
    await b.flush();
    expect([...baselines.keys()]).toEqual(['m@1']);

    const later = [0, 0, 0, 0, 0, 0, 0, 1, 1, 1];
    b.observe(1, plan, 'm@1', batch(later).rows, batch(later).scored);
    await b.flush();
    const stored = summarize(firstA);
    const expected = emptyCounts(stored);
    for (const y of later) count(stored, expected, y);
    const output = added.flatMap((values) => (values[2] as string[]).map((kind, i) => ({ kind, counts: (values[5] as string[])[i] })))
      .filter((entry) => entry.kind === 'output');
    expect(output).toEqual([{ kind: 'output', counts: `{${expected.counts.join(',')}}` }]);
  });
});
