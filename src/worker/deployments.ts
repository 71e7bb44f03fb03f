import type pg from 'pg';
import { describe, isConnectionError, ModelError } from '../errors.js';
import type { Logger } from '../log.js';
import {
  listActiveDeployments,
  listUnvalidatedModels,
  RECHECK_DEPLOYMENTS,
  recordSignature,
  type DeploymentRow,
} from '../db/statements.js';
import type { SessionCache } from '../models/sessions.js';
import { deploymentStatements, type DeploymentStatements } from '../queue/statements.js';
import type { ModelVersion } from '../scoring/plan.js';

export interface ActiveDeployment extends DeploymentRow {
  readonly sql: DeploymentStatements;
  /** The version the deployment's model reference resolves to (its alias, or its pin). */
  readonly own: ModelVersion;
  readonly modelRef: string;
  readonly keyCount: number;
}

/** Every version a deployment scores with: its own (or its split's variants) and its shadow. */
export function versionsInUse(deployment: ActiveDeployment): string[] {
  const live = deployment.plan.variants?.map((v) => v.ref) ?? [deployment.modelRef];
  return deployment.plan.shadow ? [...live, deployment.plan.shadow.ref] : live;
}

/**
 * Reads signatures of models registered with plain SQL (which activates deployments waiting
 * for them), re-checks deployments against their tables, then lists the active deployments and
 * releases sessions no deployment uses.
 */
export async function loadDeployments(
  pool: pg.Pool,
  models: SessionCache,
  log: Logger,
  recheck: RecheckCursor = new RecheckCursor(),
): Promise<ActiveDeployment[]> {
  for (const model of await listUnvalidatedModels(pool)) await readSignature(pool, models, model, log);
  const deployments = await listDeployments(pool, log, recheck);
  models.retain(new Set(deployments.flatMap(versionsInUse)));
  return deployments;
}

/**
 * Loads one model registered with plain SQL and records its signature, or why it cannot load.
 * One model never stops the worker: a model that does not load is recorded as such (its
 * deployments turn invalid), and any other failure to read it, short of a lost connection, is
 * logged and tried again at the next reload.
 */
async function readSignature(pool: pg.Pool, models: SessionCache, model: { name: string; version: number }, log: Logger): Promise<void> {
  const ref = `${model.name}@${model.version}`;
  try {
    const loaded = await models.get(model.name, model.version);
    await recordSignature(pool, model, { signature: loaded.signature });
    log.info({ model: ref }, 'model signature recorded');
  } catch (error) {
    if (isConnectionError(error)) throw error;
    if (error instanceof ModelError) {
      log.error({ model: ref, err: error }, `model cannot be loaded: ${describe(error)}`);
      await recordSignature(pool, model, { error: error.message }).catch((recordError: unknown) => {
        if (isConnectionError(recordError)) throw recordError;
        log.warn({ model: ref, err: recordError }, `could not record why the model does not load: ${describe(recordError)}`);
      });
      return;
    }
    log.warn({ model: ref, err: error }, `model not read, trying again at the next reload: ${describe(error)}`);
  }
}

/**
 * Where a process's re-check of deployments against their tables goes on at its next reload:
 * each reload checks what fits in RECHECK_BUDGET_MS (event triggers catch schema changes as they
 * happen; without them every deployment is checked each time).
 */
export class RecheckCursor {
  after = 0;
}

/** Database time a reload spends re-checking deployments (re-planning one costs tens of ms). */
const RECHECK_BUDGET_MS = 100;

/** The active deployments with their statements (what the relay needs; it loads no models). */
export async function listDeployments(pool: pg.Pool, log: Logger, recheck: RecheckCursor = new RecheckCursor()): Promise<ActiveDeployment[]> {
  const { rows } = await pool.query<{ changed: number; next_after: number | null }>(RECHECK_DEPLOYMENTS, [recheck.after, RECHECK_BUDGET_MS]);
  recheck.after = rows[0]?.next_after ?? 0;
  if ((rows[0]?.changed ?? 0) > 0) log.info({ changed: rows[0]!.changed }, 'deployments re-checked against their tables');
  const active = await listActiveDeployments(pool);
  return active.map((row) => ({
    ...row,
    sql: deploymentStatements(row),
    own: { model: row.model, version: row.version, ref: `${row.model}@${row.version}` },
    modelRef: `${row.model}@${row.version}`,
    keyCount: row.plan.keys.length,
  }));
}
