import { describe, expect, it } from 'vitest';
import { BUCKETS, bucketOf, histogram } from '../../src/worker/latency.js';

describe('latency histogram', () => {
  it('puts sub-millisecond latencies in bucket 0 and quarter octaves above', () => {
    expect(bucketOf(0.3)).toBe(0);
    expect(bucketOf(1)).toBe(1);
    expect(bucketOf(1.18)).toBe(1);
    expect(bucketOf(1.2)).toBe(2);
    expect(bucketOf(2)).toBe(5);
    expect(bucketOf(1e12)).toBe(BUCKETS - 1);
  });

  it('counts every latency once', () => {
    const counts = histogram([0.5, 1, 2, 2, 1000]);
    expect(counts).toHaveLength(BUCKETS);
    expect(counts.reduce((a, b) => a + b, 0)).toBe(5);
    expect(counts[5]).toBe(2);
  });
});
