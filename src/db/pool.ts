import pg from 'pg';

/** A pool for one purpose; application_name shows up in pg_stat_activity. */
export function createPool(connectionString: string, options: { max: number; name: string }): pg.Pool {
  const pool = new pg.Pool({
    connectionString,
    max: options.max,
    application_name: `pgscore ${options.name}`,
    idleTimeoutMillis: 30_000,
  });
  // pg-pool listens for errors only on idle clients. A checked-out client whose server goes away
  // (a Postgres restart mid-batch) emits 'error' too, and with no listener that ends the
  // process; the failing query already reports the error, and the client is not reused.
  pool.on('connect', (client) => client.on('error', () => undefined));
  return pool;
}

export function createClient(connectionString: string, name: string): pg.Client {
  return new pg.Client({ connectionString, application_name: `pgscore ${name}` });
}
