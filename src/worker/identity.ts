import { setTimeout as sleep } from 'node:timers/promises';
import type pg from 'pg';
import { WHO_AM_I } from '../db/statements.js';
import { ConfigError, describe, isConnectionError } from '../errors.js';
import type { Logger } from '../log.js';

/** How long a starting worker waits for a database that is down, starting or shutting down. */
const STARTUP_PATIENCE_MS = 60_000;

/**
 * The worker and the relay run as a member of pgscore_worker, never as a superuser: table
 * owners' own triggers run as the worker during write-back, and input expressions run in its
 * session. A superuser is refused unless the operator says so explicitly.
 */
export async function checkWorkerRole(db: pg.Pool, allowSuperuser: boolean, log?: Logger): Promise<void> {
  const { rows } = await firstContact(db, log);
  const me = rows[0];
  if (!me) return;
  if (me.superuser && !allowSuperuser) {
    throw new ConfigError(`pgscore refuses to score as superuser "${me.role}"`, {
      hint:
        'Connect as a login role in the pgscore_worker group, e.g. `pgscore create-worker-role pgscore_worker_1` ' +
        '(password from PGSCORE_WORKER_PASSWORD) and use it in DATABASE_URL, or pass --allow-superuser (env PGSCORE_ALLOW_SUPERUSER=true).',
    });
  }
  if (!me.superuser && !me.worker) {
    throw new ConfigError(`role "${me.role}" is not a member of pgscore_worker`, {
      hint: `GRANT pgscore_worker TO ${JSON.stringify(me.role)}; (run \`pgscore migrate\` first if the role does not exist).`,
    });
  }
}

/**
 * The first query, tried again while the database cannot be reached (a restart, a container
 * that starts after the worker) for up to a minute; the worker's loop rides out later outages.
 */
async function firstContact(db: pg.Pool, log: Logger | undefined) {
  const deadline = Date.now() + STARTUP_PATIENCE_MS;
  for (let delay = 250; ; delay = Math.min(5_000, delay * 2)) {
    try {
      return await db.query<{ role: string; superuser: boolean; worker: boolean }>(WHO_AM_I);
    } catch (error) {
      if (!isConnectionError(error) || Date.now() + delay > deadline) throw error;
      log?.warn({ err: error, retryInMs: delay }, `database not reachable yet: ${describe(error)}`);
      await sleep(delay);
    }
  }
}
