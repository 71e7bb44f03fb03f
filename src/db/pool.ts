import pg from 'pg';

/** A pool for one purpose; application_name shows up in pg_stat_activity. */
export function createPool(connectionString: string, options: { max: number; name: string }): pg.Pool {
  return new pg.Pool({
    connectionString,
    max: options.max,
    application_name: `pgscore ${options.name}`,
    // A pooled connection that errors while idle must not crash the process; the next checkout reconnects.
    idleTimeoutMillis: 30_000,
  });
}

export function createClient(connectionString: string, name: string): pg.Client {
  return new pg.Client({ connectionString, application_name: `pgscore ${name}` });
}
