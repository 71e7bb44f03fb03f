import type { ClaimedRow } from '../queue/claimed-row.js';
import type { ModelVersion, Plan } from '../scoring/plan.js';

/**
 * A row's place in [0, 1), from its primary key alone: the same row lands in the same place on
 * every worker and every rescore, so it keeps its variant while the weights stay. FNV-1a over
 * the key texts, then murmur3's finaliser, so consecutive keys spread evenly.
 */
export function keyPosition(keys: readonly string[]): number {
  let h = 0x811c9dc5;
  for (let k = 0; k < keys.length; k++) {
    const text = keys[k]!;
    for (let i = 0; i < text.length; i++) {
      h ^= text.charCodeAt(i);
      h = Math.imul(h, 0x01000193);
    }
    h ^= 0x1f; // separates ('1', '23') from ('12', '3')
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return (h >>> 0) / 0x1_0000_0000;
}

export interface VariantGroup {
  readonly version: ModelVersion;
  readonly rows: ClaimedRow[];
}

/**
 * Splits a batch by the version that scores each row: the deployment's own model, or under a
 * split the variant whose share of the weights covers the row's key position (variants in the
 * plan's order, each taking weight / total of [0, 1)).
 */
export function groupByVariant(plan: Plan, own: ModelVersion, rows: readonly ClaimedRow[]): VariantGroup[] {
  const variants = plan.variants?.filter((v) => v.weight > 0);
  if (!variants || variants.length === 0) return [{ version: own, rows: [...rows] }];
  const total = variants.reduce((sum, v) => sum + v.weight, 0);
  const bounds: number[] = [];
  let cumulative = 0;
  for (const v of variants) bounds.push((cumulative += v.weight) / total);
  const groups = variants.map((version) => ({ version, rows: [] as ClaimedRow[] }));
  for (const row of rows) {
    const position = keyPosition(row.keys);
    let i = 0;
    while (i < bounds.length - 1 && position >= bounds[i]!) i++;
    groups[i]!.rows.push(row);
  }
  return groups.filter((group) => group.rows.length > 0);
}
