import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listActiveDeployments } from '../../src/db/statements.js';
import { deploymentStatements } from '../../src/queue/statements.js';
import { createTestDatabase, push, type TestDatabase } from '../helpers/db.js';

/**
 * Golden files of everything pgscore generates for a deployment: the trigger function and
 * triggers, the queue table, the worker's grants, the stored plan, and the claim, write-back and
 * requeue statements the worker builds from it. Generated SQL is product code: a change to it
 * shows up as a diff of test/fixtures/golden/ in review. `UPDATE_GOLDEN=1` rewrites the files.
 */
const GOLDEN = new URL('../fixtures/golden/', import.meta.url);
const UPDATE = process.env.UPDATE_GOLDEN === '1';

interface Case {
  /** File name under test/fixtures/golden/ (without .sql). */
  readonly file: string;
  readonly deployment: string;
  /** What a user runs; copied into the golden file as its header. */
  readonly setup: readonly string[];
}

const CASES: readonly Case[] = [
  {
    file: 'single-key',
    deployment: 'flowers',
    setup: [
      'CREATE TABLE flowers (id bigint PRIMARY KEY, sl real, sw real, pl real, pw real)',
      `SELECT ml.deploy('flowers', 'flowers', 'iris',
  inputs => '{"X": ["sl", "sw", "pl", "pw"]}', outputs => '{"species": "label", "p_setosa": "probabilities[0]"}')`,
    ],
  },
  {
    file: 'composite-key-typed',
    deployment: 'readings',
    setup: [
      `CREATE TABLE readings (
  seq int, site text, a real, b numeric, c double precision, d smallint, e bigint, ok boolean, tag varchar(10),
  PRIMARY KEY (seq, site))`,
      `SELECT ml.deploy('readings', 'readings', 'typed',
  inputs => '{"f32": ["a", "b"], "f64": "c", "i32": "d", "i64": "e", "flag": "ok", "tag": "tag"}')`,
    ],
  },
  {
    file: 'partitioned',
    deployment: 'orders',
    setup: [
      `CREATE TABLE orders (id bigint, region text, sl real, sw real, pl real, pw real, PRIMARY KEY (id, region))
  PARTITION BY LIST (region)`,
      `CREATE TABLE orders_eu PARTITION OF orders FOR VALUES IN ('eu')`,
      `CREATE TABLE orders_us PARTITION OF orders FOR VALUES IN ('us')`,
      `SELECT ml.deploy('orders', 'orders', 'iris', inputs => '{"X": ["sl", "sw", "pl", "pw"]}', outputs => '{"species": "label"}')`,
    ],
  },
  {
    file: 'quoted-other-schema',
    deployment: 'lab-samples',
    setup: [
      'CREATE SCHEMA "Lab Data"',
      `CREATE TABLE "Lab Data"."Iris Samples" (
  "Sample ID" int PRIMARY KEY, "Sepal Length" real, "Sepal Width" real, "Petal Length" real, "Petal Width" real)`,
      `SELECT ml.deploy('lab-samples', '"Lab Data"."Iris Samples"', 'iris',
  inputs => '{"X": ["Sepal Length", "Sepal Width", "Petal Length", "Petal Width"]}',
  outputs => '{"Predicted Species": "label", "p(setosa)": "probabilities[0]"}')`,
    ],
  },
  {
    file: 'input-expression',
    deployment: 'measurements',
    setup: [
      'CREATE TABLE measurements (id bigint PRIMARY KEY, sl_mm int, sw_mm int, pl_mm int, pw_mm int)',
      `SELECT ml.deploy('measurements', 'measurements', 'iris',
  inputs => '{"X": ["sl_mm / 10.0", "sw_mm / 10.0", "pl_mm / 10.0", "greatest(pw_mm, 0) / 10.0"]}',
  outputs => '{"species": "label"}')`,
    ],
  },
];

const PRIVILEGE_ORDER = ['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER', 'MAINTAIN', 'USAGE', 'CREATE', 'EXECUTE'];
const byPrivilege = (a: string, b: string) => PRIVILEGE_ORDER.indexOf(a) - PRIVILEGE_ORDER.indexOf(b);

/** GRANT statements equal to an object's ACL, leaving out what its owner holds. */
async function grants(db: TestDatabase, kind: 'table' | 'schema' | 'function', oid: number, name: string): Promise<string[]> {
  const catalog = {
    table: 'SELECT relacl AS acl, relowner AS owner FROM pg_class WHERE oid = $1',
    schema: 'SELECT nspacl AS acl, nspowner AS owner FROM pg_namespace WHERE oid = $1',
    function: 'SELECT proacl AS acl, proowner AS owner FROM pg_proc WHERE oid = $1',
  }[kind];
  const rows = await db.sql<{ grantee: string; privileges: string[] }>(`
    SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END AS grantee,
           array_agg(a.privilege_type || CASE WHEN a.is_grantable THEN ' (grantable)' ELSE '' END) AS privileges
      FROM (${catalog}) o, aclexplode(o.acl) a
     WHERE a.grantee <> o.owner
     GROUP BY 1`, [oid]);
  const on = kind === 'table' ? name : `${kind.toUpperCase()} ${name}`;
  return rows.sort((a, b) => (a.grantee < b.grantee ? -1 : 1)).map((row) => `GRANT ${row.privileges.sort(byPrivilege).join(', ')} ON ${on} TO ${row.grantee};`);
}

/** Column privileges (system columns included) as GRANT statements, columns in attnum order. */
async function columnGrants(db: TestDatabase, oid: number, name: string): Promise<string[]> {
  const rows = await db.sql<{ grantee: string; privilege: string; columns: string }>(`
    SELECT CASE WHEN x.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(x.grantee)) END AS grantee,
           x.privilege_type AS privilege, string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) AS columns
      FROM pg_attribute a, aclexplode(a.attacl) x
     WHERE a.attrelid = $1 AND NOT a.attisdropped
     GROUP BY 1, 2`, [oid]);
  return rows
    .sort((a, b) => (a.grantee < b.grantee ? -1 : a.grantee > b.grantee ? 1 : byPrivilege(a.privilege, b.privilege)))
    .map((row) => `GRANT ${row.privilege} (${row.columns}) ON ${name} TO ${row.grantee};`);
}

/** The queue table as the CREATE TABLE and CREATE INDEX statements it equals. */
async function queueDefinition(db: TestDatabase, queue: string): Promise<string[]> {
  const columns = await db.sql<{ line: string }>(`
    SELECT concat_ws(' ', quote_ident(a.attname), format_type(a.atttypid, a.atttypmod),
             CASE a.attidentity WHEN 'a' THEN 'GENERATED ALWAYS AS IDENTITY' WHEN 'd' THEN 'GENERATED BY DEFAULT AS IDENTITY' END,
             CASE WHEN a.attnotnull THEN 'NOT NULL' END,
             'DEFAULT ' || pg_get_expr(d.adbin, d.adrelid)) AS line
      FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
     WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped
     ORDER BY a.attnum`, [queue]);
  const constraints = await db.sql<{ line: string }>(`
    SELECT 'CONSTRAINT ' || quote_ident(conname) || ' ' || pg_get_constraintdef(oid, true) AS line
      FROM pg_constraint WHERE conrelid = $1::regclass AND contype NOT IN ('n') ORDER BY conname COLLATE "C"`, [queue]);
  const indexes = await db.sql<{ line: string }>(`
    SELECT pg_get_indexdef(indexrelid) || ';' AS line FROM pg_index WHERE indrelid = $1::regclass
     ORDER BY indexrelid::regclass::text COLLATE "C"`, [queue]);
  const body = [...columns, ...constraints].map((row) => `  ${row.line}`).join(',\n');
  return [`CREATE TABLE ${queue} (\n${body}\n);`, ...indexes.map((row) => row.line)];
}

async function render(db: TestDatabase, c: Case): Promise<string> {
  const [d] = await db.sql<{ id: number; source: number; relname: string; namespace: number; plan: string }>(`
    SELECT d.id, d.source::int AS source, d.source::regclass::text AS relname, c.relnamespace::int AS namespace,
           jsonb_pretty(d.plan) AS plan
      FROM ml._deployments d JOIN pg_class c ON c.oid = d.source WHERE d.name = $1`, [c.deployment]);
  if (!d) throw new Error(`deployment ${c.deployment} does not exist`);
  const queue = `ml._queue_${d.id}`;
  const [fn] = await db.sql<{ oid: number; definition: string }>(
    `SELECT p.oid::int AS oid, pg_get_functiondef(p.oid) AS definition FROM pg_proc p WHERE p.oid = $1::regprocedure`,
    [`ml._enqueue_${d.id}()`]);
  const triggers = await db.sql<{ definition: string }>(`
    SELECT pg_get_triggerdef(t.oid, true) || ';' AS definition FROM pg_trigger t
     WHERE t.tgrelid = $1 AND NOT t.tgisinternal ORDER BY t.tgname COLLATE "C"`, [d.source]);
  const partitions = await db.sql<{ oid: number; name: string }>(`
    SELECT c.oid::int AS oid, c.oid::regclass::text AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
     WHERE i.inhparent = $1 ORDER BY c.oid::regclass::text COLLATE "C"`, [d.source]);
  const [schema] = await db.sql<{ name: string }>('SELECT quote_ident(nspname) AS name FROM pg_namespace WHERE oid = $1', [d.namespace]);
  const [queueOid] = await db.sql<{ oid: number }>('SELECT $1::regclass::oid::int AS oid', [queue]);

  const worker = (await listActiveDeployments(db.pool)).find((row) => row.id === d.id);
  if (!worker) throw new Error(`deployment ${c.deployment} is not active`);
  const sql = deploymentStatements(worker);

  const sourceGrants = [
    ...(await grants(db, 'schema', d.namespace, schema!.name)),
    ...(await grants(db, 'table', d.source, d.relname)),
    ...(await columnGrants(db, d.source, d.relname)),
  ];
  const triggerLines = triggers.map((t) => t.definition);
  for (const partition of partitions) {
    // Statement triggers on the parent do not fire for statements that name a partition.
    const own = await db.sql<{ definition: string }>(`
      SELECT pg_get_triggerdef(t.oid, true) || ';' AS definition FROM pg_trigger t
       WHERE t.tgrelid = $1 AND NOT t.tgisinternal ORDER BY t.tgname COLLATE "C"`, [partition.oid]);
    triggerLines.push(`-- on partition ${partition.name}:${own.length ? '' : ' none'}`, ...own.map((t) => t.definition));
  }
  for (const partition of partitions) {
    sourceGrants.push(...(await grants(db, 'table', partition.oid, partition.name)), ...(await columnGrants(db, partition.oid, partition.name)));
  }

  const statement = (text: string) => `${text.replace(/^\n+/, '').replace(/\s+$/, '')};`;
  const comment = (text: string) => text.split('\n').map((line) => `-- ${line}`.trimEnd()).join('\n');
  const sections: [string, string][] = [
    ['Setup (what the user ran)', comment(c.setup.map((s) => `${s};`).join('\n'))],
    ['Stored plan (ml._deployments.plan)', comment(d.plan)],
    [`Trigger function (pg_get_functiondef)`, `${fn!.definition.trimEnd()};\n${(await grants(db, 'function', fn!.oid, `ml._enqueue_${d.id}()`)).join('\n') || '-- EXECUTE: owner only'}`],
    [`Triggers on the source table${partitions.length ? ' and its partitions' : ''} (pg_get_triggerdef)`, triggerLines.join('\n')],
    ['Queue table (from the catalog)', [...(await queueDefinition(db, queue)), ...(await grants(db, 'table', queueOid!.oid, queue))].join('\n')],
    [`Grants on the source table${partitions.length ? ' and its partitions' : ''} (ACLs other than the owner's)`, sourceGrants.join('\n')],
    [`Worker: claim (src/queue/claim.ts; $1 batch size in keys, $2 most queue rows to lock, $3 the deployment row's xmin)`, statement(sql.claim.text)],
    [`Worker: write-back, fast form (src/writeback/sql.ts, ${worker.partitioned ? 'partitioned: by primary key' : 'by ctid'})`, statement(sql.writeBack.fast.text)],
    [`Worker: write-back, careful form (src/writeback/sql.ts, ${worker.partitioned ? 'partitioned: by primary key' : 'by ctid'})`, statement(sql.writeBack.careful.text)],
    ['Worker: requeue (src/queue/requeue.ts)', statement(sql.requeue.text)],
    ['Worker: pending', statement(sql.pending)],
  ];
  const text = [
    comment(`Golden file: the SQL pgscore generates for deployment "${c.deployment}" (deployment id shown as <id>).
Written by test/integration/golden.test.ts with UPDATE_GOLDEN=1; review every change to it.`),
    ...sections.map(([title, body]) => `-- ==== ${title}\n${body}`),
  ].join('\n\n');
  // The deployment id depends on the order of deployments; everything named after it is normalised.
  return `${text.replace(new RegExp(`(_(?:queue|enqueue)_)${d.id}(?![0-9])`, 'g'), '$1<id>')}\n`;
}

describe('golden files of the SQL generated for a deployment', () => {
  let db: TestDatabase;

  beforeAll(async () => {
    db = await createTestDatabase();
    await push(db, 'iris', 'iris.onnx');
    await push(db, 'typed', 'typed.onnx');
    for (const c of CASES) for (const statement of c.setup) await db.sql(statement);
    if (UPDATE) await mkdir(GOLDEN, { recursive: true });
  });
  afterAll(async () => {
    await db?.drop();
  });

  for (const c of CASES) {
    it(`${c.file}.sql: ${c.setup.at(-1)!.split('\n')[0]}`, async () => {
      const actual = await render(db, c);
      const file = new URL(`${c.file}.sql`, GOLDEN);
      if (UPDATE) {
        await writeFile(file, actual);
        return;
      }
      const expected = await readFile(file, 'utf8').catch(() => null);
      expect(expected, `test/fixtures/golden/${c.file}.sql is missing: run with UPDATE_GOLDEN=1 and review it`).not.toBeNull();
      expect(actual).toBe(expected);
    });
  }
});
