import { describe, expect, it } from 'vitest';
import { parseMetrics, parseSampleValue, type PromHistogram, type PromSample } from '../helpers/prometheus-text.js';

describe('the test suite reads /metrics as Prometheus does', () => {
  it('reads NaN and infinities in every spelling Prometheus accepts', () => {
    for (const nan of ['NaN', 'Nan', 'nan', 'NAN']) expect(parseSampleValue(nan)).toBeNaN();
    for (const inf of ['+Inf', 'Inf', 'inf', '+Infinity']) expect(parseSampleValue(inf)).toBe(Infinity);
    expect(parseSampleValue('-Inf')).toBe(-Infinity);
    expect(parseSampleValue('1.5e-3')).toBe(0.0015);
    expect(parseSampleValue('-0.25')).toBe(-0.25);
    expect(() => parseSampleValue('one')).toThrow('not a sample value: one');
  });

  it("parses prom-client's output with a NaN gauge, a counter and a labelled histogram", () => {
    const text = [
      '# HELP pgscore_nodejs_eventloop_lag_mean_seconds The mean of the recorded event loop delays.',
      '# TYPE pgscore_nodejs_eventloop_lag_mean_seconds gauge',
      'pgscore_nodejs_eventloop_lag_mean_seconds Nan',
      '# TYPE pgscore_rows_scored_total counter',
      'pgscore_rows_scored_total{deployment="flo\\"wers",model="iris@1"} 60',
      '# TYPE pgscore_batch_phase_seconds histogram',
      'pgscore_batch_phase_seconds_bucket{le="0.005",deployment="flowers",phase="claim"} 2',
      'pgscore_batch_phase_seconds_bucket{le="+Inf",deployment="flowers",phase="claim"} 3',
      'pgscore_batch_phase_seconds_sum{deployment="flowers",phase="claim"} 0.04',
      'pgscore_batch_phase_seconds_count{deployment="flowers",phase="claim"} 3',
      'pgscore_low -Inf 1700000000000',
      '',
    ].join('\n');
    const metrics = parseMetrics(text);
    const lag = metrics.pgscore_nodejs_eventloop_lag_mean_seconds!;
    expect(lag.type).toBe('gauge');
    expect((lag.data as PromSample[])[0]!.value).toBeNaN();
    expect(metrics.pgscore_rows_scored_total!.data).toEqual([{ labels: { deployment: 'flo"wers', model: 'iris@1' }, value: 60 }]);
    expect(metrics.pgscore_batch_phase_seconds!.data as PromHistogram[]).toEqual([
      { labels: { deployment: 'flowers', phase: 'claim' }, buckets: { '0.005': 2, '+Inf': 3 }, count: 3, sum: 0.04 },
    ]);
    expect(metrics.pgscore_low!.data).toEqual([{ labels: {}, value: -Infinity }]);
  });
});
