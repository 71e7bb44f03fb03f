import type { Worker } from '../../../src/worker/worker.js';
import type { TestDatabase } from '../db.js';
import type { TenantB } from './checks.js';

/** What the generated suite shares between cases: the database, the roles, the running worker, tenant B. */
export interface Suite {
  readonly db: TestDatabase;
  /** Owns every generated table and deploys it (a member of pgscore_admin, no superuser). */
  readonly owner: string;
  readonly password: string;
  readonly tenantB: TenantB;
  worker: Worker | undefined;
  /** The version of "sums" that production points at. */
  production: 1 | 2;
  /** Cases run so far (also numbers each case's objects). */
  cases: number;
  /** Application statements run so far, on each of the twin and the deployed table. */
  statements: number;
  drainTimeoutMs: number;
}

/** A failed check: what was seen, with the statement that showed it. */
export class CaseFailure extends Error {}
