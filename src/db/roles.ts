import pg from 'pg';
import { UsageError } from '../errors.js';

/**
 * Creates (or updates) a login role in the pgscore_worker group, for `pgscore worker` and
 * `pgscore relay` to connect as: `pgscore create-worker-role`, `pgscore up`, docker-compose.
 * Idempotent; the password is set when given. `replication` lets it read the WAL, which
 * deployments with "capture": "wal" need (and which lets it read every change in the cluster).
 */
export async function createWorkerRole(
  db: pg.ClientBase | pg.Pool,
  name: string,
  password?: string,
  options: { replication?: boolean } = {},
): Promise<void> {
  if (!/^[a-z_][a-z0-9_$]{0,62}$/.test(name)) {
    throw new UsageError(`role name "${name}" is not valid`, { hint: 'Use lower-case letters, digits and "_" (at most 63 characters).' });
  }
  const role = pg.escapeIdentifier(name);
  const { rowCount } = await db.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [name]);
  if (!rowCount) await db.query(`CREATE ROLE ${role} LOGIN`);
  if (password !== undefined) await db.query(`ALTER ROLE ${role} PASSWORD ${pg.escapeLiteral(password)}`);
  await db.query(`GRANT pgscore_worker TO ${role}`);
  if (options.replication) await db.query(`ALTER ROLE ${role} REPLICATION`);
}

/** The same connection string, logging in as another role. */
export function connectionAs(url: string, user: string, password?: string): string {
  const parsed = new URL(url);
  parsed.username = encodeURIComponent(user);
  parsed.password = password === undefined ? '' : encodeURIComponent(password);
  return parsed.toString();
}
