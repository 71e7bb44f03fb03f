import { startWorker, type TestDatabase } from '../db.js';
import type { TenantB } from './checks.js';
import type { Gates, TransportFault } from './spec.js';

/**
 * What scores the suite's rows: the notify worker (generated.test.ts) or the Kafka relay and
 * worker (generated-kafka.test.ts). The cases and their checks are the same for both.
 */
export interface Transport {
  readonly name: 'notify' | 'kafka';
  /** The 'restart' fault: stops every scorer cleanly and starts it again. */
  restart(): Promise<void>;
  /** Stops every scorer (after the suite). */
  stop(): Promise<void>;
  /**
   * A fault only this transport has, run beside the statement it is generated at (the statement
   * starts first); resolves once what it broke runs again.
   */
  fault?(fault: TransportFault): Promise<void>;
  /** Polled by the drain: throws CaseFailure when a scorer is gone for good. */
  watch?(): Promise<void>;
  /** After the case's statements, before the drain: ends a fault still under way (or armed). */
  settle?(): Promise<void>;
  /** What the scorers are doing, for a stall's report (of the deployment whose database id is given). */
  describe?(deploymentId: number): Promise<string>;
  /** Rows also wait in Kafka: a drain waits for ml.status.in_kafka = 0 as well as pending = 0. */
  readonly waitsInKafka: boolean;
}

/** What the generated suite shares between cases: the database, the roles, the running scorers, tenant B. */
export interface Suite {
  readonly db: TestDatabase;
  /** Owns every generated table and deploys it (a member of pgscore_admin, no superuser). */
  readonly owner: string;
  readonly password: string;
  readonly tenantB: TenantB;
  readonly transport: Transport;
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

/** The notify worker, in process (generated.test.ts). */
export async function notifyTransport(db: TestDatabase): Promise<Transport> {
  let worker = await startWorker(db);
  return {
    name: 'notify',
    waitsInKafka: false,
    async restart() {
      await worker.stop();
      worker = await startWorker(db);
    },
    stop: () => worker.stop(),
  };
}
