import pg from 'pg';

/** What node-postgres remembers of a connection's named statements (not in its types). */
interface ParsedStatements {
  connection?: { parsedStatements?: Record<string, string> };
}

/**
 * Deallocates the deployment statements (named `pgscore_…`) that this connection prepared for a
 * plan no deployment has any more. Names carry the plan's fingerprint (src/queue/statements.ts),
 * so every promotion prepares new ones, and Postgres keeps each for the connection's life: a
 * claim statement held about 180 KB of the backend's memory, and node-postgres keeps its text.
 * Called when the pool hands out a connection, so the DEALLOCATE is queued before the caller's
 * statements; node-postgres forgets the names too, and prepares them again if a rollback brings
 * a plan back.
 */
export function forgetStaleStatements(client: pg.ClientBase, inUse: ReadonlySet<string>): void {
  const parsed = (client as unknown as ParsedStatements).connection?.parsedStatements;
  if (!parsed) return;
  const stale = Object.keys(parsed).filter((name) => name.startsWith('pgscore_') && !inUse.has(name));
  if (stale.length === 0) return;
  for (const name of stale) delete parsed[name];
  // A failure here (a lost connection) surfaces in the caller's own statements.
  client.query(stale.map((name) => `DEALLOCATE ${pg.escapeIdentifier(name)}`).join('; ')).catch(() => undefined);
}
