import type pg from 'pg';
import { describe } from '../errors.js';
import type { Logger } from '../log.js';
import { RateLimitedLog } from '../log-limit.js';
import type { ActiveDeployment } from '../worker/deployments.js';
import { lastFireTime } from './schedule.js';

/** Prediction-log partitions and retention, statistics trimming (sql/functions/055_prediction_log.sql). */
const MAINTAIN = 'SELECT ml._maintain()';
const FINISH_RUNS = 'SELECT ml._finish_runs()';
/** $1 deployment id: the database's clock, the deployment's last scheduled run and its creation. */
const SCHEDULE_STATE = `
  SELECT now() AS now, d.created_at,
         (SELECT max(r.scheduled_for) FROM ml._runs r WHERE r.deployment_id = d.id) AS last
    FROM ml._deployments d WHERE d.id = $1`;
/** $1 deployment id, $2 fire time: starts the run unless another worker did (see 060_runs.sql). */
const START_SCHEDULED_RUN = 'SELECT ml._start_scheduled_run($1, $2) AS run';

/** Changes of each deployment's alerts, sent as NOTIFY pgscore_alerts (sql/functions/075_alerts.sql). */
const CHECK_ALERTS = 'SELECT deployment, alert, state, detail FROM ml._check_alerts($1)';

const MAINTAIN_EVERY_MS = 60_000;
const TICK_EVERY_MS = 1_000;
const ALERTS_EVERY_MS = 10_000;
/** "degraded" joins a day of the prediction log to the labels: evaluated on every 6th check. */
const QUALITY_ALERTS_EVERY = 6;

/**
 * What every worker does besides scoring, on timers: once a second it marks finished runs and
 * starts the runs of batch deployments whose schedule fired (the database's advisory lock and
 * one-run-per-fire-time make one worker start each); every 10 s it checks the deployments'
 * alerts; once a minute it keeps the prediction log's partitions and trims statistics. A
 * schedule missed while no worker ran fires once, late.
 */
export class Upkeep {
  readonly #timers: NodeJS.Timeout[] = [];
  readonly #failures: RateLimitedLog;
  #ticking: Promise<void> | undefined;
  #maintaining: Promise<void> | undefined;
  #alerting: Promise<void> | undefined;
  #alertChecks = 0;

  constructor(
    private readonly pool: pg.Pool,
    private readonly log: Logger,
    private readonly deployments: () => Promise<readonly ActiveDeployment[]> | readonly ActiveDeployment[],
  ) {
    this.#failures = new RateLimitedLog(log);
  }

  async start(): Promise<void> {
    await this.maintain();
    this.#timers.push(
      setInterval(() => void this.maintain(), MAINTAIN_EVERY_MS),
      setInterval(() => void this.tick(), TICK_EVERY_MS),
      setInterval(() => void this.checkAlerts(), ALERTS_EVERY_MS),
    );
  }

  async stop(): Promise<void> {
    for (const timer of this.#timers) clearInterval(timer);
    await Promise.all([this.#ticking, this.#maintaining, this.#alerting]);
  }

  /** Sends (and logs) the changes of the deployments' alerts; one worker at a time does. */
  checkAlerts(): Promise<void> {
    const quality = this.#alertChecks++ % QUALITY_ALERTS_EVERY === 0;
    this.#alerting ??= this.pool.query<{ deployment: string; alert: string; state: string; detail: unknown }>(CHECK_ALERTS, [quality]).then(
      ({ rows }) => {
        for (const change of rows) {
          const line = { deployment: change.deployment, alert: change.alert, detail: change.detail };
          if (change.state === 'raised') this.log.warn(line, `alert raised: ${change.alert}`);
          else this.log.info(line, `alert cleared: ${change.alert}`);
        }
      },
      (error: unknown) => void this.#failures.warn('alerts', { err: error }, `alerts not checked: ${describe(error)}`),
    ).finally(() => (this.#alerting = undefined));
    return this.#alerting;
  }

  maintain(): Promise<void> {
    this.#maintaining ??= this.pool.query(MAINTAIN).then(
      () => undefined,
      (error: unknown) => void this.#failures.warn('maintain', { err: error }, `upkeep failed: ${describe(error)}`),
    ).finally(() => (this.#maintaining = undefined));
    return this.#maintaining;
  }

  tick(): Promise<void> {
    this.#ticking ??= this.#tick().then(
      () => undefined,
      (error: unknown) => void this.#failures.warn('schedule', { err: error }, `scheduler failed: ${describe(error)}`),
    ).finally(() => (this.#ticking = undefined));
    return this.#ticking;
  }

  async #tick(): Promise<void> {
    await this.pool.query(FINISH_RUNS);
    for (const deployment of await this.deployments()) {
      const { schedule, timezone, mode } = deployment.plan;
      if (mode !== 'batch' || !schedule) continue;
      const { rows } = await this.pool.query<{ now: Date; created_at: Date; last: Date | null }>(SCHEDULE_STATE, [deployment.id]);
      const state = rows[0];
      if (!state) continue;
      let due: Date;
      try {
        due = lastFireTime(schedule, timezone, state.now);
      } catch (error) {
        this.#failures.error(`cron:${deployment.id}`, { deployment: deployment.name },
          `schedule ${JSON.stringify(schedule)} cannot be read: ${describe(error)}`);
        continue;
      }
      if (due <= state.created_at || (state.last && due <= state.last)) continue;
      const started = await this.pool.query<{ run: string | null }>(START_SCHEDULED_RUN, [deployment.id, due]);
      const run = started.rows[0]?.run;
      if (run) this.log.info({ deployment: deployment.name, run: Number(run), scheduledFor: due.toISOString() }, 'scheduled run started');
    }
  }
}
