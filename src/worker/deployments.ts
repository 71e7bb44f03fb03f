import type pg from 'pg';
import { ModelError } from '../errors.js';
import type { Logger } from '../log.js';
import {
  deploymentSql,
  listActiveDeployments,
  listUnvalidatedModels,
  recordSignature,
  type DeploymentRow,
  type DeploymentSql,
} from '../db/statements.js';
import type { SessionCache } from '../models/sessions.js';

export interface ActiveDeployment extends DeploymentRow {
  readonly sql: DeploymentSql;
  readonly modelRef: string;
}

/**
 * Reads signatures of models registered with plain SQL (which activates deployments waiting
 * for them), then lists the active deployments and releases sessions no deployment uses.
 */
export async function loadDeployments(pool: pg.Pool, models: SessionCache, log: Logger): Promise<ActiveDeployment[]> {
  for (const model of await listUnvalidatedModels(pool)) {
    const ref = `${model.name}@${model.version}`;
    try {
      const loaded = await models.get(model.name, model.version);
      await recordSignature(pool, model, { signature: loaded.signature });
      log.info({ model: ref }, 'model signature recorded');
    } catch (error) {
      if (!(error instanceof ModelError)) throw error;
      await recordSignature(pool, model, { error: error.message });
      log.error({ model: ref, err: error }, 'model cannot be loaded');
    }
  }
  const deployments = await listDeployments(pool);
  models.retain(new Set(deployments.map((d) => d.modelRef)));
  return deployments;
}

/** The active deployments with their statements (what the relay needs; it loads no models). */
export async function listDeployments(pool: pg.Pool): Promise<ActiveDeployment[]> {
  const rows = await listActiveDeployments(pool);
  return rows.map((row) => ({ ...row, sql: deploymentSql(row), modelRef: `${row.model}@${row.version}` }));
}
