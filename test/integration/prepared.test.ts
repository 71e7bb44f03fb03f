import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { forgetStaleStatements } from '../../src/db/prepared.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';

describe('statements prepared for replaced plans are deallocated', () => {
  let db: TestDatabase;
  let client: pg.Client;

  beforeAll(async () => {
    db = await createTestDatabase();
    client = new pg.Client({ connectionString: db.url });
    await client.connect();
  });
  afterAll(async () => {
    await client?.end();
    await db?.drop();
  });

  const run = async (name: string) => (await client.query<{ v: number }>({ name, text: 'SELECT $1::int AS v', values: [7] })).rows[0]?.v;
  const prepared = async () =>
    (await client.query<{ name: string }>('SELECT name FROM pg_prepared_statements ORDER BY name')).rows.map((r) => r.name);

  it('keeps the statements in use and other names, drops the rest, and prepares a dropped one again when asked', async () => {
    for (const name of ['pgscore_claim_1_old', 'pgscore_claim_1_new', 'app_statement']) await run(name);
    expect(await prepared()).toEqual(['app_statement', 'pgscore_claim_1_new', 'pgscore_claim_1_old']);

    forgetStaleStatements(client, new Set(['pgscore_claim_1_new']));
    expect(await prepared()).toEqual(['app_statement', 'pgscore_claim_1_new']);

    // A rollback brings the old plan back: node-postgres parses it again instead of failing.
    expect(await run('pgscore_claim_1_old')).toBe(7);
    expect(await prepared()).toEqual(['app_statement', 'pgscore_claim_1_new', 'pgscore_claim_1_old']);

    forgetStaleStatements(client, new Set(['pgscore_claim_1_new', 'pgscore_claim_1_old']));
    expect(await prepared()).toEqual(['app_statement', 'pgscore_claim_1_new', 'pgscore_claim_1_old']);
  });
});
