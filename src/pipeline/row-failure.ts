import { isConnectionError, PgscoreError } from '../errors.js';

/**
 * Which database errors belong to a row rather than to the batch or the deployment. A statement
 * over many rows fails as a whole when one row fails; these are the errors worth splitting the
 * batch for, to find the rows and make them dead letters. SQLSTATE classes:
 *   22 data exception (a cast of 'abc', a division by zero, a value out of range)
 *   23 integrity constraint violation (a CHECK on a prediction column, NOT NULL, a foreign key)
 *   27 triggered data change violation; 09 triggered action exception
 *   2F, 38, 39 SQL / external routine exception; P0 PL/pgSQL RAISE (an owner's trigger or function)
 *   44 WITH CHECK OPTION violation (also row security's checks)
 */
const ROW_CLASSES = ['22', '23', '27', '09', '2F', '38', '39', 'P0', '44'];

export function isRowFailure(error: unknown): boolean {
  if (isConnectionError(error)) return false;
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' && code.length === 5 && ROW_CLASSES.includes(code.slice(0, 2));
}

/**
 * In the write-back, also a permission an owner's trigger lacks for this row (42501): the row
 * becomes a dead letter that says so (ml.retry once it is granted), never a stalled batch.
 */
export function isWriteRowFailure(error: unknown): boolean {
  return isRowFailure(error) || (error as { code?: unknown } | null)?.code === '42501';
}

/**
 * Errors that no write to the table can avoid: it publishes updates without a replica identity
 * (55000, object not in prerequisite state), or the database refuses writes (25006). The
 * deployment turns invalid with the reason; its rows stay queued.
 */
export function isTableFailure(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return code === '55000' || code === '25006';
}

/** A deployment's table takes no prediction at all (isTableFailure); the message is the database's. */
export class UnwritableTableError extends PgscoreError {
  constructor(readonly deploymentId: number, cause: unknown) {
    super(`predictions cannot be written to the table: ${(cause as Error).message}`, { cause, retriable: false });
  }
}
