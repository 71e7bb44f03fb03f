import pg from 'pg';
import { FEATURES, SINGLE_INSERT_VALUES } from './db.js';
import { percentiles, quantile, sleep } from './stats.js';

export interface LatencyRun {
  /** One entry per window (a repetition): percentiles of commit→visible in ms. */
  readonly windows: { p50: number; p95: number; p99: number; n: number }[];
  readonly overall: { p50: number; p95: number; p99: number; max: number; n: number };
  readonly achievedRate: number;
  /** INSERTs issued per second while the writer issued them (the paced rate, unless the writer fell behind). */
  readonly offeredRate: number;
  readonly pollRttMedianMs: number;
  readonly polls: number;
  readonly unseen: number;
}

/**
 * Steady single-row INSERTs (autocommit) at `rate` rows/s for `seconds`, from a small pool; the
 * commit time is taken when each INSERT … RETURNING id returns. A separate connection polls
 * `SELECT id … WHERE id = ANY(outstanding) AND p1 IS NOT NULL` every `pollEveryMs`; a row's
 * prediction counts as visible when the first poll that shows it returns (an upper bound: the
 * error is at most one poll interval plus one poll round trip). Rows inserted during the first
 * `warmupSeconds` are not counted; the rest is split into `windows` equal windows by insert time.
 */
export async function measureLatency(
  url: string,
  table: string,
  options: { rate: number; seconds: number; windows: number; warmupSeconds: number; pollEveryMs: number },
): Promise<LatencyRun> {
  const writers = new pg.Pool({ connectionString: url, max: 8, application_name: 'bench writer' });
  const poller = new pg.Client({ connectionString: url, application_name: 'bench poller' });
  await poller.connect();
  const insert = { name: 'bench_insert', text: `INSERT INTO ${table} (${FEATURES.join(', ')}) VALUES (${SINGLE_INSERT_VALUES}) RETURNING id` };
  const committed = new Map<string, { at: number; sent: number }>();
  const latencies: { sent: number; ms: number }[] = [];
  const rtts: number[] = [];
  let polls = 0;
  let issued = 0;
  let inflight = 0;
  let writing = true;
  const total = Math.round(options.rate * (options.seconds + options.warmupSeconds));
  const started = performance.now();
  const failures: unknown[] = [];
  let issuingEnded = started;

  const writeLoop = (async () => {
    while (issued < total) {
      const due = Math.min(total, Math.floor(((performance.now() - started) / 1000) * options.rate));
      while (issued < due && inflight < 64) {
        issued++;
        inflight++;
        const sent = performance.now();
        writers.query<{ id: string }>(insert).then(
          (result) => {
            inflight--;
            committed.set(result.rows[0]!.id, { at: performance.now(), sent: sent - started });
          },
          (error: unknown) => {
            inflight--;
            failures.push(error);
          },
        );
      }
      await sleep(1);
    }
    issuingEnded = performance.now();
    while (inflight > 0) await sleep(1);
    writing = false;
  })();

  const pollLoop = (async () => {
    const deadline = () => !writing && (committed.size === 0 || performance.now() - started > (options.seconds + options.warmupSeconds + 30) * 1000);
    while (!deadline()) {
      if (committed.size === 0) {
        await sleep(1);
        continue;
      }
      const ids = [...committed.keys()];
      const sentAt = performance.now();
      const { rows } = await poller.query<{ id: string }>({
        name: 'bench_poll',
        text: `SELECT id FROM ${table} WHERE id = ANY($1::bigint[]) AND p1 IS NOT NULL`,
        values: [ids],
      });
      const now = performance.now();
      rtts.push(now - sentAt);
      polls++;
      for (const { id } of rows) {
        const c = committed.get(id);
        if (!c) continue;
        committed.delete(id);
        latencies.push({ sent: c.sent, ms: now - c.at });
      }
      if (options.pollEveryMs > 0) await sleep(options.pollEveryMs);
    }
  })();

  await Promise.all([writeLoop, pollLoop]);
  const elapsed = (performance.now() - started) / 1000;
  await writers.end();
  await poller.end();
  if (failures.length > 0) throw new Error(`${failures.length} inserts failed: ${String(failures[0])}`);

  const measured = latencies.filter((l) => l.sent >= options.warmupSeconds * 1000);
  const windowMs = (options.seconds * 1000) / options.windows;
  const windows = Array.from({ length: options.windows }, (_, w) => {
    const from = options.warmupSeconds * 1000 + w * windowMs;
    const inWindow = measured.filter((l) => l.sent >= from && l.sent < from + windowMs).map((l) => l.ms);
    const p = percentiles(inWindow);
    return { p50: p.p50, p95: p.p95, p99: p.p99, n: p.n };
  }).filter((w) => w.n > 0);
  return {
    windows,
    overall: percentiles(measured.map((l) => l.ms)),
    achievedRate: issued / Math.max(elapsed, options.seconds),
    offeredRate: issued / ((issuingEnded - started) / 1000),
    pollRttMedianMs: quantile([...rtts].sort((a, b) => a - b), 0.5),
    polls,
    unseen: committed.size,
  };
}
