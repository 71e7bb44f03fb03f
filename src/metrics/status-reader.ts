import pg from 'pg';
import type { Logger } from '../log.js';
import { RateLimitedLog } from '../log-limit.js';

/** What the queue gauges show of one deployment, as ml.status has it at scrape time. */
export interface DeploymentStatus {
  readonly deployment: string;
  readonly pending: number | null;
  /** Age of the oldest queued row; 0 when nothing is queued. */
  readonly oldestPendingSeconds: number;
  /** Rows relayed to Kafka and not yet handled; null with the notify transport. */
  readonly inKafka: number | null;
  readonly deadLetters: number;
}

/** One feature's drift over the last hour, or one version's live quality over the last day. */
export interface QualityRow {
  readonly deployment: string;
  readonly model: string;
  readonly kind: string;
  readonly feature: string;
  readonly value: number;
}

/** The PSI of each feature over the last hour (ml.drift) and each version's quality over the last day (ml.performance). */
const READ_QUALITY = `
  SELECT 'psi' AS what, deployment, model, kind, feature, psi AS value FROM ml._drift(ARRAY['1 hour']) WHERE psi IS NOT NULL
  UNION ALL
  SELECT 'quality', deployment, model, m.metric, '', m.value
    FROM ml._performance(ARRAY['1 day']) p,
         LATERAL (VALUES ('accuracy', p.accuracy), ('auc', p.auc), ('log_loss', p.log_loss), ('mae', p.mae), ('rmse', p.rmse)) m(metric, value)
   WHERE m.value IS NOT NULL`;

/** Drift and quality change slowly and cost a join over the prediction log: read at most this often. */
const QUALITY_EVERY_MS = 60_000;

const READ_STATUS = `
  SELECT deployment, pending, coalesce(extract(epoch FROM oldest_pending_age), 0)::float8 AS oldest_pending_seconds,
         in_kafka, dead_letters
    FROM ml.status`;

/**
 * A scrape must answer within Prometheus' scrape timeout (10 s by default) even when Postgres is
 * slow or gone: the read gives up after this long and the scrape goes on without queue gauges.
 */
const STATUS_TIMEOUT_MS = 2_000;

/**
 * Reads ml.status for the queue gauges, on a one-connection pool of its own so a scrape never
 * waits for (or takes) a connection a batch needs. The worker's role may SELECT ml.status.
 */
export class StatusReader {
  readonly #pool: pg.Pool;
  readonly #log: RateLimitedLog;
  #inFlight: Promise<DeploymentStatus[] | undefined> | undefined;
  #quality: { at: number; rows: { psi: QualityRow[]; quality: QualityRow[] } } | undefined;
  #qualityInFlight: Promise<{ psi: QualityRow[]; quality: QualityRow[] } | undefined> | undefined;

  constructor(connectionString: string, log: Logger) {
    // Not createPool (src/db/pool.ts): this pool needs the timeouts, which only the constructor takes.
    this.#pool = new pg.Pool({
      connectionString,
      max: 1,
      application_name: 'pgscore metrics',
      idleTimeoutMillis: 60_000,
      connectionTimeoutMillis: STATUS_TIMEOUT_MS,
      statement_timeout: STATUS_TIMEOUT_MS,
      query_timeout: STATUS_TIMEOUT_MS + 500,
    });
    // As in createPool: a connection lost while idle or in use must not end the process.
    this.#pool.on('error', () => undefined);
    this.#pool.on('connect', (client) => client.on('error', () => undefined));
    this.#log = new RateLimitedLog(log, { intervalMs: 60_000 });
  }

  /**
   * ml.status now, or undefined when it cannot be read. prom-client starts every gauge's collect
   * of a scrape at once: they share the read in flight instead of each counting every queue.
   */
  read(): Promise<DeploymentStatus[] | undefined> {
    this.#inFlight ??= this.#query().finally(() => (this.#inFlight = undefined));
    return this.#inFlight;
  }

  /**
   * Drift and live quality, read at most once a minute (ml.performance joins the prediction log
   * to the labels); the last reading in between, or undefined when it cannot be read.
   */
  quality(): Promise<{ psi: QualityRow[]; quality: QualityRow[] } | undefined> {
    if (this.#quality && Date.now() - this.#quality.at < QUALITY_EVERY_MS) return Promise.resolve(this.#quality.rows);
    this.#qualityInFlight ??= this.#pool
      .query<QualityRow & { what: string }>(READ_QUALITY)
      .then(({ rows }) => {
        const read = { psi: rows.filter((r) => r.what === 'psi'), quality: rows.filter((r) => r.what === 'quality') };
        this.#quality = { at: Date.now(), rows: read };
        return read;
      })
      .catch((error: unknown) => {
        this.#log.warn('quality', { err: error }, 'ml.drift and ml.performance cannot be read for the metrics');
        return undefined;
      })
      .finally(() => (this.#qualityInFlight = undefined));
    return this.#qualityInFlight;
  }

  /**
   * One statement of the status page (src/metrics/status-page.ts) on this reader's connection,
   * with the same timeouts; throws what it met.
   */
  async query<R extends pg.QueryResultRow>(text: string): Promise<R[]> {
    return (await this.#pool.query<R>(text)).rows;
  }

  async close(): Promise<void> {
    await this.#pool.end();
  }

  async #query(): Promise<DeploymentStatus[] | undefined> {
    try {
      const { rows } = await this.#pool.query<{
        deployment: string;
        pending: string | null;
        oldest_pending_seconds: number;
        in_kafka: string | null;
        dead_letters: string;
      }>(READ_STATUS);
      return rows.map((row) => ({
        deployment: row.deployment,
        pending: row.pending === null ? null : Number(row.pending),
        oldestPendingSeconds: row.oldest_pending_seconds,
        inKafka: row.in_kafka === null ? null : Number(row.in_kafka),
        deadLetters: Number(row.dead_letters),
      }));
    } catch (error) {
      this.#log.warn('status', { err: error }, 'metrics: cannot read ml.status; this scrape has no queue gauges');
      return undefined;
    }
  }
}
