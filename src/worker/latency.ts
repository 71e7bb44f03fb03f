/**
 * Latency histogram with quarter-octave buckets, summed by ml.status (ml._latency_quantile):
 * bucket 0 holds latencies under 1 ms, bucket b > 0 holds [2^((b-1)/4), 2^(b/4)) ms, and the
 * last bucket everything above.
 */
export const BUCKETS = 64;

export function bucketOf(ms: number): number {
  if (!(ms >= 1)) return 0;
  return Math.min(BUCKETS - 1, 1 + Math.floor(4 * Math.log2(ms)));
}

export function histogram(latenciesMs: Iterable<number>): number[] {
  const counts = new Array<number>(BUCKETS).fill(0);
  for (const ms of latenciesMs) counts[bucketOf(ms)]! += 1;
  return counts;
}
