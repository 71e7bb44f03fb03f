import type pg from 'pg';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../../src/log.js';
import { DriftRecorder } from '../../src/monitoring/drift.js';
import type { ClaimedRow } from '../../src/queue/claimed-row.js';
import type { Plan } from '../../src/scoring/plan.js';

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
});
