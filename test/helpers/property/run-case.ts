import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import pg from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
import { connectionAs } from '../../../src/db/roles.js';
import { WORKER_ROLE } from '../global-postgres.js';
import { literal, Names, quoteIdent } from './names.js';
import { checkOtherTenant, checkRows, drain } from './checks.js';
import { appColumns, caseDdl, renderOp, type TableState } from './render.js';
import { isTransportFault, type CaseSpec, type Op } from './spec.js';
import { CaseFailure, type Suite } from './suite.js';

type Outcome = { ok: true; rows: number } | { ok: false; code: string; message: string; where: string };

async function execute(client: pg.Client, sql: string, copy: string | undefined): Promise<Outcome> {
  try {
    if (copy !== undefined) {
      const stream = client.query(copyFrom(sql));
      await pipeline(Readable.from([copy]), stream);
      return { ok: true, rows: Number(stream.rowCount ?? 0) };
    }
    const result = await client.query(sql);
    return { ok: true, rows: result.rowCount ?? 0 };
  } catch (error) {
    const e = error as pg.DatabaseError;
    return { ok: false, code: e.code ?? 'no code', message: e.message, where: e.where ?? '' };
  }
}


const same = (a: Outcome, b: Outcome) => (a.ok && b.ok ? a.rows === b.rows : !a.ok && !b.ok && a.code === b.code);

/**
 * A statement of several rows that fails on both tables on its own data, each on another row:
 * the order it meets its rows in depends on the plan (a MERGE's join; a COPY into a partitioned
 * table, which pgscore's transition-table triggers make insert row by row: F5), and the twin's
 * plan may differ. Still a failure of the application's data on both (class 22 or 23), and none
 * raised inside pgscore (its context names no function of ml).
 */
const bothFailOnData = (twin: Outcome, deployed: Outcome) =>
  !twin.ok && !deployed.ok && /^2[23]/.test(twin.code) && /^2[23]/.test(deployed.code) && !/\bml\./.test(deployed.where);

function multiRow(op: Op): boolean {
  if ('rows' in op) return op.rows.length > 1;
  if (op.kind === 'bulk') return true;
  if ('where' in op) return op.where === 'all' || op.where.length > 1;
  return false;
}
const show = (o: Outcome) => (o.ok ? `ok (${o.rows} rows)` : `${o.code}: ${o.message}`);

async function login(suite: Suite): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: connectionAs(suite.db.url, suite.owner, suite.password) });
  client.on('error', () => undefined);
  await client.connect();
  return client;
}

/** Runs one generated case end to end and throws CaseFailure when a check fails. */
export async function runCase(suite: Suite, spec: CaseSpec): Promise<void> {
  suite.cases += 1;
  const names = new Names(suite.cases, spec);
  const twin = await login(suite);
  const deployed = await login(suite);
  const side = await login(suite);
  const state: TableState = { note: 'note', extra: false };
  let deployedNow = false;
  try {
    for (const statement of caseDdl(names, suite.tenantB)) await deployed.query(statement);

    const step = async (op: Op, concurrently?: () => Promise<void>) => {
      const r = renderOp(names, state, op);
      const onTwin = await execute(twin, r.sql(names.twin), r.copy);
      const [onDeployed] = await Promise.all([execute(deployed, r.sql(names.deployed), r.copy), concurrently?.()]);
      suite.statements += 1;
      if (onTwin.ok) suite.seen.statementsOk += 1;
      else suite.seen.statementsFailed += 1;
      if (!same(onTwin, onDeployed) && !(multiRow(op) && bothFailOnData(onTwin, onDeployed))) {
        throw new CaseFailure(
          `differential: ${r.sql(names.deployed)}${r.copy ? `\n  copy data: ${JSON.stringify(r.copy)}` : ''}\n  twin: ${show(onTwin)}\n  deployed: ${show(onDeployed)}`,
        );
      }
      if (onDeployed.ok) r.after?.(state);
    };

    for (const op of spec.before) await step(op);

    const deployError = await deploy(deployed, names);
    if (deployError) {
      if (mayRefuse(spec) && deployError.code !== 'XX000' && deployError.message.length > 20) {
        suite.seen.refusedAtDeploy += 1;
        return;
      }
      throw new CaseFailure(`deploy refused: ${deployError.code}: ${deployError.message}`);
    }
    deployedNow = true;

    for (const [i, op] of spec.ops.entries()) {
      const fault = spec.fault.kind !== 'none' && spec.fault.at === i ? spec.fault : undefined;
      if (fault) suite.seen.faults += 1;
      if (fault?.kind === 'restart') {
        await suite.transport.restart();
      } else if (fault?.kind === 'terminate') {
        await suite.db.sql(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND usename = $1`, [WORKER_ROLE]);
      }
      await step(op, async () => {
        if (fault?.kind === 'undeploy') {
          await asADba(() => side.query('SELECT ml.undeploy($1)', [names.deployment])).catch((error: pg.DatabaseError) => {
            throw new CaseFailure(`ml.undeploy failed mid-run: ${error.code}: ${error.message} DETAIL ${error.detail} WHERE ${error.where}`);
          });
          deployedNow = false;
        } else if (fault?.kind === 'lock') {
          // The lock holder's own SELECT … FOR UPDATE fails with 40001 when the statement beside
          // it moves a row to another partition (Postgres, with or without pgscore): it tries again.
          for (let attempt = 1; ; attempt++) {
            await side.query('BEGIN');
            try {
              await side.query(`SELECT 1 FROM ${names.deployed} FOR UPDATE`);
              break;
            } catch (error) {
              await side.query('ROLLBACK');
              if ((error as pg.DatabaseError).code !== '40001' || attempt === 5) throw error;
            }
          }
          await new Promise((resolve) => setTimeout(resolve, 300));
          await side.query('COMMIT');
        } else if (fault && isTransportFault(fault)) {
          if (!suite.transport.fault) throw new Error(`the ${suite.transport.name} transport has no fault ${fault.kind}`);
          await suite.transport.fault(fault);
        } else if (fault?.kind === 'promote') {
          suite.production = suite.production === 1 ? 2 : 1;
          await asADba(() => suite.db.sql(`SELECT ml.promote('sums', $1)`, [suite.production])).catch((error: pg.DatabaseError) => {
            throw new CaseFailure(`ml.promote failed mid-run: ${error.code}: ${error.message} DETAIL ${error.detail} WHERE ${error.where}`);
          });
        }
      });
    }

    await suite.transport.settle?.();
    // The worker's write-backs must not change what the application wrote: compare after the drain.
    if (deployedNow) {
      await drain(suite, names);
      await checkRowsAfterDrain(suite, names);
    } else {
      await checkUndeployed(suite, names);
    }
    await compareTables(suite, names, state);
    await checkOtherTenant(suite, names);
  } finally {
    // A case that failed with a fault still armed: end it, so that the next case starts clean.
    await suite.transport.settle?.().catch(() => undefined);
    if (deployedNow) await suite.db.sql('SELECT ml.undeploy($1)', [names.deployment]).catch(() => undefined);
    for (const c of [twin, deployed, side]) await c.end().catch(() => undefined);
    await cleanUp(suite, names);
  }
}

/** Owner triggers, publications, RLS and inheritance may be refused at deploy, with a reason. */
function mayRefuse(spec: CaseSpec): boolean {
  const t = spec.table;
  return !['none', 'guarded'].includes(t.trigger) || t.publication !== 'none' || t.rls || t.layout === 'inherited';
}

async function deploy(client: pg.Client, names: Names): Promise<{ code: string; message: string } | undefined> {
  const t = names.spec.table;
  const f64 = {
    column: names.col('c'),
    generated: names.col('g'),
    cast: `${names.q('ctxt')}::float8`,
    division: `${names.q('c')} / ${names.q('z')}`,
  }[t.f64];
  const i32 = t.i32 === 'division' ? `${names.q('num')} / ${names.q('den')}` : names.col('d');
  const inputs = { f32: [names.col('a'), names.col('b')], f64, i32, i64: names.col('e'), flag: names.col('ok'), tag: names.col('tag') };
  try {
    await client.query(`SELECT ml.deploy($1, $2, 'sums', $3, $4, $5)`, [
      names.deployment,
      names.deployed,
      JSON.stringify(inputs),
      JSON.stringify({ [names.col('total')]: 'total' }),
      JSON.stringify(t.capture === 'wal' ? { capture: 'wal' } : {}),
    ]);
    return undefined;
  } catch (error) {
    const e = error as pg.DatabaseError;
    return { code: e.code ?? 'no code', message: e.message };
  }
}

/** After an undeploy: no trigger of pgscore's is left on the table, and the deployment is gone. */
async function checkUndeployed(suite: Suite, names: Names): Promise<void> {
  const triggers = await suite.db.sql<{ n: number }>(
    `SELECT count(*)::int AS n FROM pg_trigger t JOIN pg_partition_tree($1::regclass) p ON p.relid = t.tgrelid WHERE t.tgname LIKE 'pgscore%'`,
    [names.deployed],
  );
  const left = await suite.db.sql('SELECT 1 FROM ml.deployments WHERE deployment = $1', [names.deployment]);
  if (triggers[0]!.n !== 0 || left.length !== 0) {
    throw new CaseFailure(`after ml.undeploy: ${triggers[0]!.n} pgscore trigger(s) left, deployment row ${left.length ? 'still there' : 'gone'}`);
  }
}

async function compareTables(suite: Suite, names: Names, state: TableState): Promise<void> {
  const cols = appColumns(names, state).map((c) => `${c}::text`);
  const order = names.keyColumns.map((k) => names.q(k)).join(', ');
  const read = async (table: string) =>
    (await suite.db.pool.query({ text: `SELECT ${cols.join(', ')} FROM ${table} ORDER BY ${order}`, rowMode: 'array' })).rows as unknown[][];
  const [a, b] = [await read(names.twin), await read(names.deployed)];
  if (JSON.stringify(a) !== JSON.stringify(b)) {
    throw new CaseFailure(`differential: the application's columns differ after the case\n  twin:     ${JSON.stringify(a)}\n  deployed: ${JSON.stringify(b)}`);
  }
}

async function cleanUp(suite: Suite, names: Names): Promise<void> {
  const statements = [
    `DROP PUBLICATION IF EXISTS ${quoteIdent(names.publication)}`,
    `DROP TABLE IF EXISTS ${names.deployed} CASCADE`,
    names.spec.table.ownSchema ? `DROP SCHEMA IF EXISTS ${quoteIdent(names.schema)} CASCADE` : 'SELECT 1',
    `DROP SCHEMA IF EXISTS ${quoteIdent(names.caseSchema)} CASCADE`,
    `DELETE FROM ml._deployments WHERE name = ${literal(names.deployment)} AND status = 'dropped'`,
  ];
  for (const s of statements) await suite.db.sql(s).catch(() => undefined);
}

/**
 * A DBA's call as a DBA makes it: pgscore's DDL gives way to an application that waits for it
 * (55P03 "… gave way", sql/functions/034_refusals.sql) and is run again, as its hint says.
 */
async function asADba<T>(call: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await call();
    } catch (error) {
      const { code, message } = error as pg.DatabaseError;
      if (attempt >= 10 || code !== '55P03' || !/ gave way: /.test(message)) throw error;
      await new Promise((resolve) => setTimeout(resolve, 50 * attempt));
    }
  }
}

/**
 * checkRows; with Kafka, a failure is checked again later, to tell rows lost (still in no visible
 * state) from rows late (scored after ml.status read nothing pending and nothing in Kafka: the
 * drain's signal was wrong).
 */
async function checkRowsAfterDrain(suite: Suite, names: Names): Promise<void> {
  if (!suite.transport.waitsInKafka) return checkRows(suite, names);
  const seen = { ...suite.seen };
  try {
    await checkRows(suite, names);
  } catch (error) {
    if (!(error instanceof CaseFailure)) throw error;
    Object.assign(suite.seen, seen);
    await new Promise((resolve) => setTimeout(resolve, LATE_MS));
    try {
      await checkRows(suite, names);
    } catch {
      throw new CaseFailure(`lost: still so ${LATE_MS} ms after the drain, with nothing pending and nothing in Kafka: ${error.message}`);
    }
    throw new CaseFailure(`late: ml.status read nothing pending and nothing in Kafka while rows were not scored yet; ${LATE_MS} ms later they were: ${error.message}`);
  }
}

const LATE_MS = 15_000;
