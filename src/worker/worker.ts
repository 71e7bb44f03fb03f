import { EventEmitter } from 'node:events';
import { WalCapture } from '../capture/wal.js';
import type { Config } from '../config.js';
import { createPool } from '../db/pool.js';
import { forgetStaleStatements } from '../db/prepared.js';
import { fetchModelBytes } from '../db/model-bytes.js';
import { startupPatience } from '../db/patience.js';
import { recheckDeployment } from '../db/statements.js';
import type { Logger } from '../log.js';
import { SessionCache } from '../models/sessions.js';
import { claimAndScore } from '../pipeline/batch.js';
import { ClaimSizer } from '../queue/claim.js';
import { preparedNames } from '../queue/statements.js';
import { DriftRecorder } from '../monitoring/drift.js';
import { loadDeployments, RecheckCursor, versionsInUse, type ActiveDeployment } from './deployments.js';
import { checkWorkerRole } from './identity.js';
import { QueueLoop, type LoopEvents, type LoopSettings } from './loop.js';

export type WorkerSettings = LoopSettings & Pick<Config, 'ortThreads'> & Partial<Pick<Config, 'allowSuperuser'>>;

/** `pgscore worker` with the notify transport: drains the queues, scoring each batch. */
export class Worker extends EventEmitter<LoopEvents> {
  readonly #loop: QueueLoop;
  readonly #start: () => Promise<void>;

  constructor(connectionString: string, settings: WorkerSettings, log: Logger) {
    super();
    const pool = createPool(connectionString, { max: settings.concurrency + 1, name: 'worker' });
    pool.on('error', (error) => log.warn({ err: error }, 'idle pooled connection lost'));
    // Statements prepared for plans that promotions replaced would stay on every connection.
    let statementsInUse: ReadonlySet<string> = new Set();
    pool.on('acquire', (client) => forgetStaleStatements(client, statementsInUse));
    const recheck = new RecheckCursor();
    const models = new SessionCache((name, version) => fetchModelBytes(pool, name, version), {
      threads: settings.ortThreads,
    });
    const sizer = new ClaimSizer(settings.batchSize);
    const drift = new DriftRecorder(pool, log);
    const capture = new WalCapture(connectionString, pool, log);
    this.#loop = new QueueLoop(connectionString, pool, settings, log, {
      async load() {
        const deployments = await loadDeployments(pool, models, log, recheck);
        statementsInUse = new Set(deployments.flatMap((d) => preparedNames(d.sql)));
        await drift.load(deployments.flatMap(versionsInUse));
        await capture.update(deployments);
        return deployments;
      },
      async handle(deployment, batchSize = settings.batchSize) {
        // A model that does not load throws a ModelError: the failure policy pauses the deployment.
        // The batch holds its sessions until it is done: a promotion meanwhile releases them after it.
        const lease = models.lease();
        try {
          return await claimAndScore(pool, deployment, lease, batchSize, sizer, drift);
        } finally {
          lease.release();
        }
      },
      async recheck(deployment, reason) {
        return recheckDeployment(pool, deployment.id, `a batch failed: ${reason}`);
      },
      async close() {
        await capture.stop();
        await drift.stop();
        await models.close();
        await pool.end();
      },
    });
    this.#start = async () => {
      const patiently = startupPatience(log);
      await checkWorkerRole(pool, settings.allowSuperuser ?? false, log, patiently);
      await this.#loop.start(patiently);
      drift.start();
    };
    this.#loop.on('batch', (result) => this.emit('batch', result));
    this.#loop.on('failure', (failure) => this.emit('failure', failure));
    this.#loop.on('ready', () => this.emit('ready'));
  }

  get deployments(): readonly ActiveDeployment[] {
    return this.#loop.deployments;
  }

  start(): Promise<void> {
    return this.#start();
  }

  stop(): Promise<void> {
    return this.#loop.stop();
  }
}
