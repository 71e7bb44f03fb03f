import type { EventEmitter } from 'node:events';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { LoopEvents } from '../worker/loop.js';
import type { DeploymentStatus, StatusReader } from './status-reader.js';

/** Which process serves the metrics: its rows are scored, or relayed to Kafka. */
export type MetricsRole = 'worker' | 'relay';

/** A Worker, a KafkaWorker or a Relay: their batch events, and the deployments they serve. */
export type MetricsSource = EventEmitter<LoopEvents> & { readonly deployments: readonly { readonly name: string }[] };

/**
 * Names of a batch's three phases (BatchResult.phases). The relay's middle phase is the produce
 * request (acks=all), its last the queue delete and commit.
 */
const PHASES: Readonly<Record<MetricsRole, { claimMs: string; scoreMs: string; writeMs: string }>> = {
  worker: { claimMs: 'claim', scoreMs: 'score', writeMs: 'write' },
  relay: { claimMs: 'claim', scoreMs: 'produce', writeMs: 'commit' },
};

/**
 * From 1 ms (a few rows, claimed and written on a local Postgres) to 10 s (100,000 rows, or a
 * slow disk); prom-client's defaults start at 5 ms, where most batches of a quiet worker are.
 */
/**
 * Up to this many deployments, every deployment has its series. Beyond, only deployments with
 * activity do (rows queued or in Kafka, dead letters, batches this process handled): 1,000 idle
 * deployments would add 6,000 series of zeros to every scrape.
 */
export const ALL_DEPLOYMENTS_UP_TO = 100;

const PHASE_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/**
 * The registry `/metrics` serves: counters and phase histograms fed by the source's batch and
 * failure events, queue gauges read from ml.status at scrape time, and prom-client's process
 * metrics (CPU, memory, event loop, GC), all prefixed `pgscore_`. Every label is a deployment
 * name, a phase or a failure kind, never anything of a row, so the series are bounded by the
 * deployments.
 */
export function createRegistry(role: MetricsRole, source: MetricsSource, status: StatusReader): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'pgscore_' });

  // A deployment's counters are at 0 from the first scrape after the source loaded it, not
  // from its first batch, so rate() and increase() count that batch too; beyond
  // ALL_DEPLOYMENTS_UP_TO deployments, a deployment's series start with its first batch.
  const deploymentCounter = (name: string, help: string) =>
    new Counter({
      name,
      help,
      labelNames: ['deployment'] as const,
      registers: [registry],
      collect() {
        if (source.deployments.length > ALL_DEPLOYMENTS_UP_TO) return;
        for (const deployment of source.deployments) this.inc({ deployment: deployment.name }, 0);
      },
    });

  const rows =
    role === 'worker'
      ? deploymentCounter('pgscore_rows_scored_total', 'Rows whose predictions this worker wrote back.')
      : deploymentCounter('pgscore_rows_relayed_total', 'Rows this relay produced to Kafka and deleted from their queue (committed).');
  const dead =
    role === 'worker'
      ? deploymentCounter('pgscore_dead_letters_total', 'Rows this worker recorded as dead letters (see ml.errors) instead of scoring them.')
      : undefined;
  const requeued =
    role === 'worker'
      ? deploymentCounter(
          'pgscore_rows_requeued_total',
          'Rows this worker put back on their queue (locked or changed since read, or their deployment paused).',
        )
      : undefined;

  const phases = new Histogram({
    name: 'pgscore_batch_phase_seconds',
    help:
      role === 'worker'
        ? 'Time a batch spent in each phase: claim (claim and read its rows, or decode them from Kafka), score, write (write back and commit).'
        : 'Time a relay batch spent in each phase: claim (claim and read its rows), produce (to Kafka, acks=all), commit (delete and commit).',
    labelNames: ['deployment', 'phase'] as const,
    buckets: PHASE_BUCKETS,
    registers: [registry],
  });

  const failures = new Counter({
    name: 'pgscore_batch_failures_total',
    help: 'Failed batches, by what the failure policy made of them: reconnect, pause (the model does not load) or recheck.',
    labelNames: ['deployment', 'kind'] as const,
    registers: [registry],
  });

  source.on('batch', (result) => {
    const deployment = result.deployment;
    rows.inc({ deployment }, result.written);
    dead?.inc({ deployment }, result.dead);
    requeued?.inc({ deployment }, result.requeued);
    if (result.phases) {
      const names = PHASES[role];
      for (const key of ['claimMs', 'scoreMs', 'writeMs'] as const) {
        phases.observe({ deployment, phase: names[key] }, result.phases[key] / 1000);
      }
    }
  });
  source.on('failure', (failure) => failures.inc({ deployment: failure.deployment, kind: failure.kind }));

  addStatusGauges(registry, status);
  addQualityGauges(registry, status);
  return registry;
}

/**
 * Gauges of ml.status, read when Prometheus scrapes: the same numbers whichever worker is asked
 * (aggregate them with max, not sum). Each is reset first, so an undeployed deployment's series
 * disappear. Beyond ALL_DEPLOYMENTS_UP_TO deployments, only those with rows queued, in Kafka or
 * dead-lettered have series (an absent series reads as 0).
 */
function addStatusGauges(registry: Registry, status: StatusReader): void {
  new Gauge({
    name: 'pgscore_status_up',
    help: '1 if ml.status could be read for this scrape, 0 if not (then the queue gauges are absent).',
    registers: [registry],
    async collect() {
      this.set((await status.read()) ? 1 : 0);
    },
  });

  const perDeployment = (name: string, help: string, value: (row: DeploymentStatus) => number | null) =>
    new Gauge({
      name,
      help,
      labelNames: ['deployment'] as const,
      registers: [registry],
      async collect() {
        const all = await status.read();
        this.reset();
        const rows = all && all.length > ALL_DEPLOYMENTS_UP_TO
          ? all.filter((row) => (row.pending ?? 0) > 0 || (row.deadLetters ?? 0) > 0 || (row.inKafka ?? 0) > 0)
          : all;
        for (const row of rows ?? []) {
          const v = value(row);
          if (v !== null) this.set({ deployment: row.deployment }, v);
        }
      },
    });

  perDeployment('pgscore_queue_pending', 'Rows queued for scoring (ml.status.pending).', (row) => row.pending);
  perDeployment(
    'pgscore_queue_oldest_age_seconds',
    'Age of the oldest queued row, 0 when none is queued (ml.status.oldest_pending_age).',
    (row) => row.oldestPendingSeconds,
  );
  perDeployment(
    'pgscore_kafka_lag_rows',
    'Rows relayed to Kafka and not yet handled by a worker (ml.status.in_kafka); absent with the notify transport.',
    (row) => row.inKafka,
  );
  perDeployment(
    'pgscore_deployment_dead_letters',
    'Dead letters recorded for the deployment by all workers, less those retried and fixed (ml.status.dead_letters).',
    (row) => row.deadLetters,
  );
}

/**
 * Drift and live quality gauges (ml.drift over the last hour, ml.performance over the last day),
 * read at most once a minute. Labels: deployment, model version, and the feature or metric: the
 * model's features and five metric names, never anything of a row.
 */
function addQualityGauges(registry: Registry, status: StatusReader): void {
  new Gauge({
    name: 'pgscore_drift_psi',
    help: 'Population stability index of a feature over the last hour against its model version\'s baseline (ml.drift).',
    labelNames: ['deployment', 'model', 'kind', 'feature'] as const,
    registers: [registry],
    async collect() {
      const read = await status.quality();
      this.reset();
      for (const r of read?.psi ?? []) this.set({ deployment: r.deployment, model: r.model, kind: r.kind, feature: r.feature }, r.value);
    },
  });
  new Gauge({
    name: 'pgscore_quality',
    help: 'Live quality of a model version over the last day, once labels arrive (ml.performance): accuracy, auc, log_loss, mae, rmse.',
    labelNames: ['deployment', 'model', 'metric'] as const,
    registers: [registry],
    async collect() {
      const read = await status.quality();
      this.reset();
      for (const r of read?.quality ?? []) this.set({ deployment: r.deployment, model: r.model, metric: r.kind }, r.value);
    },
  });
}
