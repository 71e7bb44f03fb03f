import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { pushModel } from '../../../src/models/registry.js';
import { createTestDatabase, modelBytes, waitFor, type TestDatabase } from '../db.js';
import { registerSums } from '../sums.js';
import { readTenantB, setUpTenantB } from './checks.js';
import type { Gates } from './spec.js';
import { emptySeen, type Suite, type Transport } from './suite.js';

const PASSWORD = 'pgscore';

/** What openSuite() made outside the test database, for closeSuite(). */
export interface SuiteRoles {
  readonly adminUrl: string;
  readonly owner: string;
  readonly tenantB: string;
}

async function serverAdmin(adminUrl: string, statements: readonly string[]): Promise<void> {
  const client = new pg.Client({ connectionString: adminUrl });
  await client.connect();
  try {
    for (const statement of statements) await client.query(statement);
  } finally {
    await client.end();
  }
}

/**
 * The generated suite's fixture, whatever scores the rows: two owner roles, a test database with
 * the "sums" model, tenant B's deployed table, and the transport `start` returns, running; once
 * tenant B's rows are scored, their snapshot.
 */
export async function openSuite(options: {
  adminUrl: string;
  gates: Gates;
  drainTimeoutMs: number;
  start: (db: TestDatabase) => Promise<Transport>;
}): Promise<{ suite: Suite; roles: SuiteRoles }> {
  const suffix = randomBytes(3).toString('hex');
  const roles = { adminUrl: options.adminUrl, owner: `prop_owner_${suffix}`, tenantB: `prop_b_${suffix}` };
  await serverAdmin(options.adminUrl, [
    `CREATE ROLE ${roles.owner} LOGIN PASSWORD '${PASSWORD}' IN ROLE pgscore_admin`,
    `CREATE ROLE ${roles.tenantB} LOGIN PASSWORD '${PASSWORD}' IN ROLE pgscore_admin`,
  ]);
  const db = await createTestDatabase();
  const database = new URL(db.url).pathname.slice(1);
  await db.sql(`GRANT CREATE ON DATABASE ${database} TO ${roles.owner}`);
  await db.sql(`GRANT CREATE ON SCHEMA public TO ${roles.owner}, ${roles.tenantB}`);
  await registerSums(db);
  await pushModel(db.pool, 'bsums', await modelBytes('typed.onnx'));
  const tenantB = await setUpTenantB(db, roles.tenantB, PASSWORD);
  const suite: Suite = {
    db,
    owner: roles.owner,
    password: PASSWORD,
    tenantB,
    transport: await options.start(db),
    production: 1,
    cases: 0,
    statements: 0,
    seen: emptySeen(),
    gates: options.gates,
    drainTimeoutMs: options.drainTimeoutMs,
  };
  await waitFor(async () => (await db.sql(`SELECT 1 FROM ml.status WHERE deployment = 'tenant_b' AND pending = 0 AND coalesce(in_kafka, 0) = 0`)).length === 1 &&
    (await db.sql(`SELECT 1 FROM public.b_scores WHERE total IS NULL`)).length === 0, "tenant B's rows scored", 120_000);
  tenantB.snapshot = await readTenantB(db, tenantB);
  return { suite, roles };
}

/** Stops the transport, drops the database and the roles; prints what the cases saw. */
export async function closeSuite(suite: Suite | undefined, roles: SuiteRoles | undefined, extra: Record<string, unknown> = {}): Promise<void> {
  await suite?.transport.stop();
  await suite?.db.drop();
  if (roles) await serverAdmin(roles.adminUrl, [roles.owner, roles.tenantB].map((role) => `DROP ROLE IF EXISTS ${role}`));
  if (suite) {
    const summary = { cases: suite.cases, statements: suite.statements, ...suite.seen, known: [...suite.gates.known], ...extra };
    console.log(JSON.stringify(suite.transport.name === 'kafka' ? { generatedKafkaSuite: summary } : { generatedSuite: summary }));
  }
}
