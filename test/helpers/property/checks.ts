import pg from 'pg';
import { connectionAs } from '../../../src/db/roles.js';
import type { TestDatabase } from '../db.js';
import type { Names } from './names.js';
import { matches, score, type RowText } from './oracle.js';
import { CaseFailure, type Suite } from './suite.js';

interface Status {
  state: string;
  pending: string | null;
  in_kafka: string | null;
  reason: string | null;
}

async function status(db: TestDatabase, deployment: string): Promise<Status | undefined> {
  const rows = await db.sql<Status>(
    `SELECT s.state, s.pending::text, s.in_kafka::text, d.reason FROM ml.status s JOIN ml.deployments d ON d.deployment = s.deployment WHERE s.deployment = $1`,
    [deployment],
  );
  return rows[0];
}

/**
 * Whether the capture read everything written so far: its slot confirmed `wal.barrier`, a WAL
 * record written once the slot existed. A slot is visible from its creation, before the
 * transaction that queues its backfill commits; its stream starts after that commit, and only the
 * stream moves the slot past the barrier. Without a slot, only a deployment that is not active is
 * captured.
 */
async function captured(db: TestDatabase, deployment: string, wal: { barrier: string | undefined }): Promise<boolean> {
  const [row] = await db.sql<{ confirmed: string | null; active: boolean }>(
    `SELECT (SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = ml._capture_slot()) AS confirmed,
            EXISTS (SELECT 1 FROM ml._deployments WHERE name = $1 AND status = 'active') AS active`, [deployment]);
  if (!row!.confirmed) {
    // Gone (dropped to be created again): a new slot needs a barrier of its own.
    wal.barrier = undefined;
    return !row!.active;
  }
  wal.barrier ??= (await db.sql<{ lsn: string }>(`SELECT pg_logical_emit_message(false, 'pgscore-test', 'barrier')::text AS lsn`))[0]!.lsn;
  const [done] = await db.sql<{ done: boolean }>('SELECT $1::pg_lsn >= $2::pg_lsn AS done', [row!.confirmed, wal.barrier]);
  return done!.done;
}

/**
 * Waits until the deployment's queue is empty, or it has stopped (invalid, with a reason); with the
 * Kafka transport, also until nothing of it waits in Kafka (read in the same snapshot). A deployment
 * still active with rows queued after the timeout has stalled: that is a finding.
 */
export async function drain(suite: Suite, names: Names): Promise<void> {
  const deadline = Date.now() + suite.drainTimeoutMs;
  let last: Status | undefined;
  // Captured from the WAL: rows are pending only once the worker read them. Everything written so
  // far is read once the slot (created with its backfill) confirms a WAL position taken after now.
  const wal = names.spec.table.capture === 'wal' ? { barrier: undefined as string | undefined } : undefined;
  while (Date.now() < deadline) {
    await suite.transport.watch?.();
    if (wal && !(await captured(suite.db, names.deployment, wal))) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      continue;
    }
    last = await status(suite.db, names.deployment);
    if (!last) throw new CaseFailure(`deployment ${names.deployment} vanished from ml.status`);
    // With Kafka, rows a stopped deployment's worker received go back to its queue (pending):
    // wait until nothing of it is left in Kafka in either case.
    const inKafka = suite.transport.waitsInKafka ? Number(last.in_kafka ?? 0) : 0;
    if (last.state !== 'active' && last.state !== 'pending' && inKafka === 0) return;
    if (Number(last.pending) === 0 && inKafka === 0) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const [row] = await suite.db.sql<{ id: number }>('SELECT id FROM ml._deployments WHERE name = $1', [names.deployment]);
  const scorers = suite.transport.describe && row ? `; ${await suite.transport.describe(row.id).catch((error: Error) => error.message)}` : '';
  throw new CaseFailure(
    `stalled: after ${suite.drainTimeoutMs} ms, ${last?.pending} row(s) still pending${suite.transport.waitsInKafka ? ` and ${last?.in_kafka} in Kafka` : ''}, deployment ${last?.state}, reason ${JSON.stringify(last?.reason)}${scorers}`,
  );
}

/**
 * Every row ends in exactly one visible state: scored with what a fresh scoring of its current
 * inputs gives (by the version its provenance names), or a dead letter with a reason, or pending
 * in ml.status behind a deployment that stopped with a reason.
 */
export async function checkRows(suite: Suite, names: Names): Promise<void> {
  const keys = names.keyColumns.map((k) => `${names.q(k)}::text`);
  const value = (c: 'a' | 'b' | 'c' | 'ctxt' | 'z' | 'd' | 'num' | 'den' | 'e' | 'ok' | 'tag') => `${names.q(c)}::text AS ${c}`;
  const g = names.spec.table.f64 === 'generated' ? `${names.q('g')}::text` : 'NULL::text';
  const rows = (
    await suite.db.pool.query<RowText & { key: string[]; total: number | null; model: string | null }>(
      `SELECT ARRAY[${keys.join(', ')}] AS key, ${(['a', 'b', 'c', 'ctxt', 'z', 'd', 'num', 'den', 'e', 'ok', 'tag'] as const).map(value).join(', ')},
              ${g} AS g, ${names.q('total')} AS total, ${quote(names.provenance)} AS model
         FROM ${names.deployed}`,
    )
  ).rows;
  const deadLetters = new Map<string, string>();
  for (const e of await suite.db.sql<{ row_key: Record<string, unknown>; reason: string | null }>(
    'SELECT row_key, reason FROM ml.errors WHERE deployment = $1',
    [names.deployment],
  )) {
    deadLetters.set(JSON.stringify(names.keyColumns.map((k) => String(e.row_key[names.col(k)]))), e.reason ?? '');
  }
  const st = (await status(suite.db, names.deployment))!;
  const stopped = st.state !== 'active' && st.state !== 'pending';
  if (stopped && !st.reason) throw new CaseFailure(`deployment is ${st.state} without a reason`);
  // Only a table the write-back may be unable to reach at all (owner triggers, publications, RLS,
  // a CHECK on the prediction) may stop its deployment; nothing else the suite generates should.
  const t = names.spec.table;
  const mayStop = t.trigger !== 'none' || t.publication !== 'none' || t.rls || t.predictionCheck || t.layout === 'inherited';
  if (stopped && !mayStop) throw new CaseFailure(`the deployment turned ${st.state}: ${st.reason}`);

  const problems: string[] = [];
  let unaccounted = 0;
  for (const row of rows) {
    const key = JSON.stringify(row.key);
    const fresh = score(names.spec.table, row);
    const dead = deadLetters.get(key);
    const version = row.model === 'sums@1' ? 1 : row.model === 'sums@2' ? 2 : undefined;
    const scored = row.total !== null && version !== undefined && matches(fresh, version, row.total);
    if (row.total !== null && row.model === null) problems.push(`${key}: a prediction without provenance`);
    if (dead !== undefined) {
      if (!dead) problems.push(`${key}: a dead letter without a reason`);
      // F10: an old dead letter left beside a correct prediction (a race).
      if (scored) problems.push(`${key}: scored correctly and a dead letter at once (${dead})`);
      suite.seen.rowsDeadLetters += 1;
      continue;
    }
    if (scored) {
      suite.seen.rowsScored += 1;
      continue;
    }
    if (stopped) {
      unaccounted += 1;
      suite.seen.rowsPendingStopped += 1;
      continue;
    }
    problems.push(
      fresh.ok
        ? `${key}: prediction ${row.total} by ${row.model}, but a fresh scoring gives v1 ${fresh.v1} / v2 ${fresh.v2}; no dead letter (${JSON.stringify(row)})`
        : `${key}: cannot be scored (${fresh.why}), yet no dead letter; prediction ${row.total} by ${row.model} (${JSON.stringify(row)})`,
    );
  }
  if (stopped && unaccounted > Number(st.pending ?? 0)) {
    problems.push(`${unaccounted} row(s) neither scored nor dead letters, but only ${st.pending} pending (deployment ${st.state}: ${st.reason})`);
  }
  if (problems.length) throw new CaseFailure(`rows in no visible state:\n  ${problems.slice(0, 8).join('\n  ')}`);
}

function quote(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/** Tenant B: another owner's table, deployed by that owner, scored before the suite starts. */
export interface TenantB {
  readonly role: string;
  readonly table: string;
  readonly queue: string;
  readonly deployment: string;
  /** Every column of every row as text, taken once B's rows were scored. */
  snapshot: string;
}

export async function readTenantB(db: TestDatabase, b: Pick<TenantB, 'table'>): Promise<string> {
  const rows = await db.pool.query({ text: `SELECT t::text FROM public.${quote(b.table)} t ORDER BY id`, rowMode: 'array' });
  return JSON.stringify(rows.rows);
}

/** Nothing reached the other owner's objects: its rows, its queue and its deployment are as they were. */
export async function checkOtherTenant(suite: Suite, names: Names): Promise<void> {
  const b = suite.tenantB;
  const now = await readTenantB(suite.db, b);
  const [st] = await suite.db.sql<{ state: string; pending: string; dead_letters: string }>(
    'SELECT state, pending::text, dead_letters::text FROM ml.status WHERE deployment = $1',
    [b.deployment],
  );
  const stolen = await suite.db.sql<{ op: string }>(`SELECT op FROM ${quote(names.caseSchema)}.audit WHERE tbl = 'stolen' AND op IS NOT NULL`);
  if (now !== b.snapshot || st?.state !== 'active' || st.pending !== '0' || st.dead_letters !== '0' || stolen.length) {
    // Later cases (and the shrinker's) compare against what B holds now, so each failure is its own.
    const before = b.snapshot;
    b.snapshot = now;
    throw new CaseFailure(
      `another owner's objects were reached: table ${now === before ? 'unchanged' : `changed to ${now.slice(0, 300)}`}, status ${JSON.stringify(st)}, ` +
        `read by the case's trigger: ${JSON.stringify(stolen.map((s) => s.op))}`,
    );
  }
}

/** Sets tenant B up: a table owned by role, deployed by it, with 20 rows scored. */
export async function setUpTenantB(db: TestDatabase, role: string, password: string): Promise<TenantB> {
  const table = 'b_scores';
  const deployment = 'tenant_b';
  const client = new pg.Client({ connectionString: connectionAs(db.url, role, password) });
  await client.connect();
  try {
    await client.query(`CREATE TABLE public.${table} (id int PRIMARY KEY, a real, b real, c float8, d int, e bigint, ok bool, tag text)`);
    await client.query(`SELECT ml.deploy($1, $2, 'bsums', '{"f32": ["a", "b"], "f64": "c", "i32": "d", "i64": "e", "flag": "ok", "tag": "tag"}', '{"total": "total"}')`, [
      deployment,
      `public.${table}`,
    ]);
    await client.query(`INSERT INTO public.${table} SELECT g, 1, 2, 3, g, 100 + g, true, 'b' FROM generate_series(1, 20) g`);
  } finally {
    await client.end();
  }
  const [id] = await db.sql<{ id: number }>('SELECT id FROM ml._deployments WHERE name = $1', [deployment]);
  return { role, table, queue: `_queue_${id!.id}`, deployment, snapshot: '' };
}
