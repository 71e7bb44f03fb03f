import type { Worker } from '../../../src/worker/worker.js';
import type { TestDatabase } from '../db.js';
import type { TenantB } from './checks.js';
import type { Gates } from './spec.js';

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
  readonly gates: Gates;
  /** What the cases saw, for the summary line: a suite that checks nothing would show it here. */
  readonly seen: Record<'statementsOk' | 'statementsFailed' | 'rowsScored' | 'rowsDeadLetters' | 'rowsPendingStopped' | 'refusedAtDeploy' | 'faults', number>;
}

export function emptySeen(): Suite['seen'] {
  return { statementsOk: 0, statementsFailed: 0, rowsScored: 0, rowsDeadLetters: 0, rowsPendingStopped: 0, refusedAtDeploy: 0, faults: 0 };
}

/** A failed check: what was seen, with the statement that showed it. */
export class CaseFailure extends Error {}
