import { EventEmitter } from 'node:events';
import type { Config } from '../config.js';
import { createPool } from '../db/pool.js';
import { fetchModelBytes } from '../db/statements.js';
import { ModelError } from '../errors.js';
import type { Logger } from '../log.js';
import { SessionCache } from '../models/sessions.js';
import { claimAndScore, ClaimSizer } from './batch.js';
import { loadDeployments, type ActiveDeployment } from './deployments.js';
import { DeploymentPaused, QueueLoop, type LoopEvents, type LoopSettings } from './loop.js';

export type WorkerSettings = LoopSettings & Pick<Config, 'ortThreads'>;

/** `pgscore worker` with the notify transport: drains the queues, scoring each batch. */
export class Worker extends EventEmitter<LoopEvents> {
  readonly #loop: QueueLoop;

  constructor(connectionString: string, settings: WorkerSettings, log: Logger) {
    super();
    const pool = createPool(connectionString, { max: settings.concurrency + 1, name: 'worker' });
    pool.on('error', (error) => log.warn({ err: error }, 'idle pooled connection lost'));
    const models = new SessionCache((name, version) => fetchModelBytes(pool, name, version), {
      threads: settings.ortThreads,
    });
    const sizer = new ClaimSizer(settings.batchSize);
    this.#loop = new QueueLoop(connectionString, pool, settings, log, {
      load: () => loadDeployments(pool, models, log),
      async handle(deployment) {
        let model;
        try {
          model = await models.get(deployment.model, deployment.version);
        } catch (error) {
          if (error instanceof ModelError) throw new DeploymentPaused(error.message, { cause: error });
          throw error;
        }
        return claimAndScore(pool, deployment, model, settings.batchSize, sizer);
      },
      async close() {
        await models.close();
        await pool.end();
      },
    });
    this.#loop.on('batch', (result) => this.emit('batch', result));
    this.#loop.on('ready', () => this.emit('ready'));
  }

  get deployments(): readonly ActiveDeployment[] {
    return this.#loop.deployments;
  }

  start(): Promise<void> {
    return this.#loop.start();
  }

  stop(): Promise<void> {
    return this.#loop.stop();
  }
}
