import type pg from 'pg';
import { startupPatience, type Patiently } from '../db/patience.js';
import { WHO_AM_I } from '../db/statements.js';
import { ConfigError } from '../errors.js';
import type { Logger } from '../log.js';

/**
 * The worker and the relay run as a member of pgscore_worker, never as a superuser: table
 * owners' own triggers run as the worker during write-back, and input expressions run in its
 * session. A superuser is refused unless the operator says so explicitly.
 */
export async function checkWorkerRole(
  db: pg.Pool,
  allowSuperuser: boolean,
  log?: Logger,
  patiently: Patiently = startupPatience(log),
): Promise<void> {
  const { rows } = await patiently(() => db.query<{ role: string; superuser: boolean; worker: boolean }>(WHO_AM_I));
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
