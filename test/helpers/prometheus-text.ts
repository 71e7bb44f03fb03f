export type PromLabels = Record<string, string>;
export interface PromSample {
  readonly labels: PromLabels;
  readonly value: number;
}
export interface PromHistogram {
  readonly labels: PromLabels;
  /** By upper bound as written (`le`), e.g. '0.005' or '+Inf'. */
  readonly buckets: Record<string, number>;
  readonly count: number;
  readonly sum: number;
}
export interface PromSummary {
  readonly labels: PromLabels;
  readonly quantiles: Record<string, number>;
  readonly count: number;
  readonly sum: number;
}
export interface PromFamily {
  readonly type: string;
  readonly help: string;
  /** Samples of a counter, gauge or untyped metric; one entry per label set of a histogram or summary. */
  readonly data: PromSample[] | PromHistogram[] | PromSummary[];
}

/**
 * A sample value as Prometheus reads it (Go's strconv.ParseFloat): decimals, and NaN and ±Inf
 * in any case. prom-client writes NaN as `Nan` (an event-loop gauge scraped within its sampling
 * period) and -Inf as `-Inf`; prom2javascript, the parser used before, refused both, so a
 * scrape failed or a line had to be dropped.
 */
export function parseSampleValue(token: string): number {
  if (/^nan$/i.test(token)) return Number.NaN;
  const infinite = /^([+-]?)inf(inity)?$/i.exec(token);
  if (infinite) return infinite[1] === '-' ? -Infinity : Infinity;
  if (!/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(token)) throw new Error(`not a sample value: ${token}`);
  return Number(token);
}

const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?$/;
const LABEL = /^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)/;

function parseLabels(text: string | undefined, line: string): PromLabels {
  const labels: PromLabels = {};
  let rest = text ?? '';
  while (rest.trim() !== '') {
    const match = LABEL.exec(rest);
    if (!match) throw new Error(`cannot parse the labels of: ${line}`);
    labels[match[1]!] = match[2]!.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
    rest = rest.slice(match[0].length);
  }
  return labels;
}

/** The Prometheus text exposition format (version 0.0.4), as Prometheus itself accepts it. */
export function parseMetrics(text: string): Record<string, PromFamily> {
  const types = new Map<string, string>();
  const helps = new Map<string, string>();
  const samples: { family: string; name: string; labels: PromLabels; value: number }[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '') continue;
    const meta = /^#\s+(HELP|TYPE)\s+(\S+)(?:\s+(.*))?$/.exec(line);
    if (meta) (meta[1] === 'TYPE' ? types : helps).set(meta[2]!, meta[3] ?? '');
    if (line.startsWith('#')) continue;
    const match = SAMPLE.exec(line);
    if (!match) throw new Error(`cannot parse the sample: ${line}`);
    const name = match[1]!;
    const base = name.replace(/_(bucket|count|sum)$/, '');
    const family = !types.has(name) && ['histogram', 'summary'].includes(types.get(base) ?? '') ? base : name;
    samples.push({ family, name, labels: parseLabels(match[2], line), value: parseSampleValue(match[3]!) });
  }

  const families: Record<string, PromFamily> = {};
  const byFamily = new Map<string, typeof samples>();
  for (const sample of samples) byFamily.set(sample.family, [...(byFamily.get(sample.family) ?? []), sample]);
  for (const [family, list] of byFamily) {
    const type = types.get(family) ?? 'untyped';
    const help = helps.get(family) ?? '';
    if (type !== 'histogram' && type !== 'summary') {
      families[family] = { type, help, data: list.map(({ labels, value }) => ({ labels, value })) };
      continue;
    }
    const key = type === 'histogram' ? 'le' : 'quantile';
    const series = new Map<string, { labels: PromLabels; points: Record<string, number>; count: number; sum: number }>();
    for (const { name, labels, value } of list) {
      const { [key]: bound, ...rest } = labels;
      const id = JSON.stringify(Object.entries(rest).sort());
      let entry = series.get(id);
      if (!entry) series.set(id, (entry = { labels: rest, points: {}, count: 0, sum: 0 }));
      if (name.endsWith('_count')) entry.count = value;
      else if (name.endsWith('_sum')) entry.sum = value;
      else if (bound !== undefined) entry.points[bound] = value;
    }
    const data = [...series.values()].map(({ labels, points, count, sum }) =>
      type === 'histogram' ? { labels, buckets: points, count, sum } : { labels, quantiles: points, count, sum });
    families[family] = { type, help, data: data as PromHistogram[] | PromSummary[] };
  }
  return families;
}
