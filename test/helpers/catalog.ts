import type pg from 'pg';

/**
 * A text dump of everything pgscore installs in one schema, for the upgrade test: a database
 * upgraded from an old release must dump exactly like a fresh install. Definitions only, never
 * rows. Every list is sorted in TypeScript (code-point order), so neither the order in which
 * objects were created nor the database's collation shows in the dump.
 */
export async function catalogDump(client: pg.ClientBase | pg.Pool, schema = 'ml'): Promise<string> {
  if (!isPool(client)) return withFixedPath(client, schema);
  const session = await client.connect();
  try {
    return await withFixedPath(session, schema);
  } finally {
    session.release();
  }
}

// Definitions are printed qualified only where the search path needs it: fix the path so two
// connections (or a caller that set its own) print the same text, then restore the caller's.
async function withFixedPath(session: pg.ClientBase, schema: string): Promise<string> {
  const [saved] = (await session.query<{ path: string }>(`SELECT current_setting('search_path') AS path`)).rows;
  await session.query(`SELECT set_config('search_path', 'pg_catalog', false)`);
  try {
    return await dump(session, schema);
  } finally {
    await session.query(`SELECT set_config('search_path', $1, false)`, [saved?.path ?? '"$user", public']);
  }
}

async function dump(session: pg.ClientBase, schema: string): Promise<string> {
  const query = async (text: string, values: unknown[] = [schema]) => (await session.query<Row>(text, values)).rows;
  if (!(await query(`SELECT 1 FROM pg_namespace WHERE nspname = $1`)).length) throw new Error(`schema ${schema} does not exist`);

  const blocks = new Map<string, string[]>();
  // Each query yields (object, line) rows; a block holds one object's lines, sorted like the objects.
  for (const text of SECTIONS) {
    for (const row of await query(text)) {
      const header = String(row.object);
      blocks.set(header, [...(blocks.get(header) ?? []), String(row.line)]);
    }
  }
  const text = [...blocks]
    .sort(([a], [b]) => byCodePoint(a, b))
    .map(([header, lines]) => [header, ...lines.sort(byCodePoint).map((line) => `  ${indent(line)}`)].join('\n'))
    .join('\n\n');
  return withoutOids(text, (await query(USER_OIDS, [])).map((row) => String(row.oid)));
}

function isPool(client: pg.ClientBase | pg.Pool): client is pg.Pool {
  return 'totalCount' in client;
}

/** The lines that differ between two dumps, with two lines of context, for an assertion message. */
export function diffLines(a: string, b: string): string {
  const left = a.split('\n');
  const right = b.split('\n');
  // Longest common subsequence over lines; the dumps are a few thousand lines at most.
  const width = right.length + 1;
  const common = new Uint32Array((left.length + 1) * width);
  for (let i = left.length - 1; i >= 0; i--) {
    for (let j = right.length - 1; j >= 0; j--) {
      common[i * width + j] = left[i] === right[j]
        ? common[(i + 1) * width + j + 1]! + 1
        : Math.max(common[(i + 1) * width + j]!, common[i * width + j + 1]!);
    }
  }
  const ops: { mark: ' ' | '-' | '+'; line: string; at: number }[] = [];
  let i = 0;
  let j = 0;
  while (i < left.length || j < right.length) {
    if (i < left.length && j < right.length && left[i] === right[j]) ops.push({ mark: ' ', line: left[i++]!, at: j++ });
    // Removals before additions, as in a unified diff.
    else if (i < left.length && (j >= right.length || common[(i + 1) * width + j]! >= common[i * width + j + 1]!)) {
      ops.push({ mark: '-', line: left[i++]!, at: j });
    } else ops.push({ mark: '+', line: right[j]!, at: j++ });
  }
  const CONTEXT = 2;
  const shown = ops.map(() => false);
  ops.forEach((op, k) => {
    if (op.mark === ' ') return;
    for (let c = Math.max(0, k - CONTEXT); c <= Math.min(ops.length - 1, k + CONTEXT); c++) shown[c] = true;
  });
  const out: string[] = [];
  ops.forEach((op, k) => {
    if (!shown[k]) return;
    if (k === 0 || !shown[k - 1]) out.push(`@@ line ${op.at + 1} @@`);
    out.push(`${op.mark} ${op.line}`);
  });
  return out.join('\n');
}

type Row = Record<string, unknown>;

function byCodePoint(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

// Bodies and view definitions span lines; indenting them keeps each object's block readable.
function indent(line: string): string {
  return line.replaceAll('\n', '\n    ');
}

// Object names built from an OID (pg_toast_16423, a generated pgscore_16423_insert) differ
// between two databases built alike. Only numbers inside identifiers are replaced: a bare
// constant in a function body that happens to equal an OID must stay.
function withoutOids(text: string, oids: string[]): string {
  const known = new Set(oids);
  return text.replace(/(?<=[A-Za-z_])\d+|\d+(?=_)/g, (digits) => (known.has(digits) ? '<oid>' : digits));
}

// Privileges as sorted `grantee=PRIVILEGE[*]` items; a NULL ACL means the default, spelled out
// so that granting exactly the defaults reads the same as never granting. kind is acldefault's
// object kind (a SQL expression); columns have no default privileges ('c' yields none).
function acl(column: string, kind: string, owner: string): string {
  return `(SELECT coalesce(string_agg(item, ', ' ORDER BY item COLLATE "C"), '(none)') FROM (
    SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END
           || '=' || a.privilege_type || CASE WHEN a.is_grantable THEN '*' ELSE '' END AS item
      FROM aclexplode(coalesce(${column}, acldefault(${kind}, ${owner}))) a) items)`;
}

const IN_SCHEMA = `(SELECT oid FROM pg_namespace WHERE nspname = $1)`;
const QUALIFIED = (namespace: string, name: string) => `quote_ident(${namespace}.nspname) || '.' || quote_ident(${name})`;

const SCHEMA = `
SELECT 'schema ' || quote_ident(n.nspname) AS object, line
  FROM pg_namespace n,
  LATERAL (VALUES ('owner: ' || pg_get_userbyid(n.nspowner)),
                  ('acl: ' || ${acl('n.nspacl', `'n'`, 'n.nspowner')}),
                  ('comment: ' || obj_description(n.oid, 'pg_namespace'))) l(line)
 WHERE n.nspname = $1 AND line IS NOT NULL`;

const FUNCTIONS = `
SELECT format('%s %s(%s)',
         CASE p.prokind WHEN 'p' THEN 'procedure' WHEN 'a' THEN 'aggregate' WHEN 'w' THEN 'window function' ELSE 'function' END,
         ${QUALIFIED('n', 'p.proname')}, pg_get_function_identity_arguments(p.oid)) AS object, line
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace JOIN pg_language l ON l.oid = p.prolang,
  LATERAL (VALUES ('arguments: ' || pg_get_function_arguments(p.oid)),
                  ('returns: ' || pg_get_function_result(p.oid)),
                  ('language: ' || l.lanname),
                  ('owner: ' || pg_get_userbyid(p.proowner)),
                  ('security: ' || CASE WHEN p.prosecdef THEN 'definer' ELSE 'invoker' END),
                  ('volatility: ' || CASE p.provolatile WHEN 'i' THEN 'immutable' WHEN 's' THEN 'stable' ELSE 'volatile' END),
                  ('strict: ' || p.proisstrict || ', leakproof: ' || p.proleakproof || ', parallel: ' || p.proparallel::text),
                  ('cost: ' || p.procost || ', rows: ' || p.prorows),
                  ('config: ' || (SELECT string_agg(c, ', ' ORDER BY c COLLATE "C") FROM unnest(p.proconfig) c)),
                  ('acl: ' || ${acl('p.proacl', `'f'`, 'p.proowner')}),
                  ('comment: ' || obj_description(p.oid, 'pg_proc')),
                  ('binary: ' || p.probin),
                  ('body: ' || p.prosrc)) v(line)
 WHERE n.nspname = $1 AND line IS NOT NULL`;

// Relations, and everything hung on them, share one header so that a table reads as one block.
const RELATION = `CASE c.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'partitioned table' WHEN 'v' THEN 'view'
  WHEN 'm' THEN 'materialized view' WHEN 'S' THEN 'sequence' WHEN 'f' THEN 'foreign table' WHEN 'c' THEN 'composite type'
  END || ' ' || ${QUALIFIED('n', 'c.relname')}`;
const RELATIONS_IN_SCHEMA = `pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = $1
   AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f', 'c')`;

const RELATIONS = `
SELECT ${RELATION} AS object, line
  FROM ${RELATIONS_IN_SCHEMA},
  LATERAL (VALUES ('owner: ' || pg_get_userbyid(c.relowner)),
                  ('acl: ' || ${acl('c.relacl', `CASE c.relkind WHEN 'S' THEN 's' ELSE 'r' END::"char"`, 'c.relowner')}),
                  ('persistence: ' || c.relpersistence::text),
                  ('options: ' || array_to_string(c.reloptions, ', ')),
                  ('replica identity: ' || CASE WHEN c.relkind IN ('r', 'p') THEN c.relreplident::text END),
                  ('row security: ' || CASE WHEN c.relkind IN ('r', 'p') THEN c.relrowsecurity || ', forced: ' || c.relforcerowsecurity END),
                  ('partition of: ' || (SELECT i.inhparent::regclass || ' ' || pg_get_expr(c.relpartbound, c.oid)
                                          FROM pg_inherits i WHERE i.inhrelid = c.oid AND c.relispartition)),
                  ('inherits: ' || (SELECT string_agg(i.inhparent::regclass::text, ', ' ORDER BY i.inhseqno)
                                      FROM pg_inherits i WHERE i.inhrelid = c.oid AND NOT c.relispartition)),
                  ('partitioned by: ' || CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END),
                  ('definition: ' || CASE WHEN c.relkind IN ('v', 'm') THEN pg_get_viewdef(c.oid, true) END),
                  ('comment: ' || obj_description(c.oid, 'pg_class'))) l(line)
 WHERE line IS NOT NULL`;

// Dropped columns stay in pg_attribute (attisdropped) after an upgrade's ALTER TABLE … DROP
// COLUMN; they are left out, and columns are listed by name, not by position.
const COLUMNS = `
SELECT ${RELATION} AS object,
       concat_ws('; ', concat_ws(' ', 'column', quote_ident(a.attname), format_type(a.atttypid, a.atttypmod),
         CASE WHEN a.attnotnull THEN 'not null' END,
         CASE WHEN a.attcollation <> t.typcollation THEN 'collate ' || quote_ident(co.collname) END,
         CASE a.attidentity WHEN 'a' THEN 'generated always as identity' WHEN 'd' THEN 'generated by default as identity' END,
         CASE WHEN a.attgenerated = 's' THEN 'generated always as (' || pg_get_expr(d.adbin, d.adrelid) || ') stored'
              WHEN a.attgenerated <> '' THEN 'generated always as (' || pg_get_expr(d.adbin, d.adrelid) || ')'
              WHEN d.adbin IS NOT NULL THEN 'default ' || pg_get_expr(d.adbin, d.adrelid) END),
         CASE WHEN a.attacl IS NOT NULL THEN 'acl: ' || ${acl('a.attacl', `'c'`, 'c.relowner')} END,
         'comment: ' || col_description(c.oid, a.attnum)) AS line
  FROM ${RELATIONS_IN_SCHEMA}
  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
  JOIN pg_type t ON t.oid = a.atttypid
  LEFT JOIN pg_collation co ON co.oid = a.attcollation
  LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
 WHERE c.relkind <> 'S'`;

// Postgres 18 also keeps NOT NULL as constraints (contype 'n'); columns already say "not null",
// and leaving them out keeps dumps of 15 and 18 alike.
const CONSTRAINTS = `
SELECT ${RELATION} AS object, 'constraint ' || quote_ident(k.conname) || ' ' || pg_get_constraintdef(k.oid, true) AS line
  FROM ${RELATIONS_IN_SCHEMA} JOIN pg_constraint k ON k.conrelid = c.oid AND k.contype <> 'n'`;

const INDEXES = `
SELECT ${RELATION} AS object,
       'index ' || pg_get_indexdef(i.indexrelid) || CASE WHEN i.indisclustered THEN ' (clustered)' ELSE '' END
       || CASE WHEN i.indisreplident THEN ' (replica identity)' ELSE '' END AS line
  FROM ${RELATIONS_IN_SCHEMA} JOIN pg_index i ON i.indrelid = c.oid`;

const SEQUENCES = `
SELECT ${RELATION} AS object, line
  FROM ${RELATIONS_IN_SCHEMA} JOIN pg_sequence s ON s.seqrelid = c.oid,
  LATERAL (VALUES (format('as %s start %s increment %s minvalue %s maxvalue %s cache %s%s', format_type(s.seqtypid, NULL),
                    s.seqstart, s.seqincrement, s.seqmin, s.seqmax, s.seqcache, CASE WHEN s.seqcycle THEN ' cycle' ELSE '' END)),
                  ((SELECT 'owned by ' || d.refobjid::regclass || '.' || quote_ident(a.attname)
                     FROM pg_depend d JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                    WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.refclassid = 'pg_class'::regclass
                      AND d.deptype IN ('a', 'i')))) l(line)
 WHERE line IS NOT NULL`;

const POLICIES = `
SELECT ${RELATION} AS object,
       format('policy %s %s for %s to %s using (%s) with check (%s)', quote_ident(p.polname),
         CASE WHEN p.polpermissive THEN 'permissive' ELSE 'restrictive' END,
         CASE p.polcmd WHEN 'r' THEN 'select' WHEN 'a' THEN 'insert' WHEN 'w' THEN 'update' WHEN 'd' THEN 'delete' ELSE 'all' END,
         (SELECT string_agg(role, ', ' ORDER BY role COLLATE "C")
            FROM (SELECT CASE WHEN r = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(r) END AS role FROM unnest(p.polroles) r) roles),
         pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid)) AS line
  FROM ${RELATIONS_IN_SCHEMA} JOIN pg_policy p ON p.polrelid = c.oid`;

const RULES = `
SELECT ${RELATION} AS object, 'rule ' || pg_get_ruledef(r.oid, true) AS line
  FROM ${RELATIONS_IN_SCHEMA} JOIN pg_rewrite r ON r.ev_class = c.oid AND r.rulename <> '_RETURN'`;

// pgscore installs triggers on the user's tables (outside the schema), calling its functions.
const TRIGGERS = `
SELECT 'trigger ' || quote_ident(g.tgname) || ' on ' || g.tgrelid::regclass AS object, line
  FROM pg_trigger g JOIN pg_proc p ON p.oid = g.tgfoid JOIN pg_class c ON c.oid = g.tgrelid,
  LATERAL (VALUES (pg_get_triggerdef(g.oid, true)),
                  ('enabled: ' || g.tgenabled::text),
                  ('comment: ' || obj_description(g.oid, 'pg_trigger'))) l(line)
 WHERE NOT g.tgisinternal AND ${IN_SCHEMA} IN (p.pronamespace, c.relnamespace) AND line IS NOT NULL`;

const EVENT_TRIGGERS = `
SELECT 'event trigger ' || quote_ident(e.evtname) AS object, line
  FROM pg_event_trigger e JOIN pg_proc p ON p.oid = e.evtfoid JOIN pg_namespace n ON n.oid = p.pronamespace,
  LATERAL (VALUES ('on ' || e.evtevent || ' execute ' || ${QUALIFIED('n', 'p.proname')} || '()'),
                  ('tags: ' || (SELECT string_agg(t, ', ' ORDER BY t COLLATE "C") FROM unnest(e.evttags) t)),
                  ('enabled: ' || e.evtenabled::text),
                  ('owner: ' || pg_get_userbyid(e.evtowner)),
                  ('comment: ' || obj_description(e.oid, 'pg_event_trigger'))) l(line)
 WHERE n.nspname = $1 AND line IS NOT NULL`;

// Enums, domains and ranges; composite types are relations above, and array types come with
// their element type.
const TYPES = `
SELECT CASE t.typtype WHEN 'e' THEN 'enum' WHEN 'd' THEN 'domain' WHEN 'r' THEN 'range' ELSE 'type' END
       || ' ' || ${QUALIFIED('n', 't.typname')} AS object, line
  FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace AND n.nspname = $1,
  LATERAL (VALUES ('owner: ' || pg_get_userbyid(t.typowner)),
                  ('acl: ' || ${acl('t.typacl', `'T'`, 't.typowner')}),
                  ('labels: ' || (SELECT string_agg(quote_literal(e.enumlabel), ', ' ORDER BY e.enumsortorder)
                                    FROM pg_enum e WHERE e.enumtypid = t.oid)),
                  ('over: ' || CASE WHEN t.typtype = 'd' THEN format_type(t.typbasetype, t.typtypmod) END),
                  ('not null: ' || CASE WHEN t.typtype = 'd' THEN t.typnotnull::text END),
                  ('default: ' || t.typdefault),
                  ('subtype: ' || (SELECT format_type(r.rngsubtype, NULL) FROM pg_range r WHERE r.rngtypid = t.oid)),
                  ('comment: ' || obj_description(t.oid, 'pg_type'))) l(line)
 WHERE t.typtype IN ('b', 'e', 'd', 'r') AND t.typelem = 0 AND line IS NOT NULL
UNION ALL
SELECT 'domain ' || ${QUALIFIED('n', 't.typname')}, 'constraint ' || quote_ident(k.conname) || ' ' || pg_get_constraintdef(k.oid, true)
  FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace AND n.nspname = $1
  JOIN pg_constraint k ON k.contypid = t.oid AND k.contype <> 'n'`;

// ALTER DEFAULT PRIVILEGES … IN SCHEMA: stored as the difference from the defaults.
const DEFAULT_ACLS = `
SELECT 'default privileges of ' || pg_get_userbyid(d.defaclrole) || ' in schema ' || quote_ident(n.nspname) AS object,
       'on ' || CASE d.defaclobjtype WHEN 'r' THEN 'tables' WHEN 'S' THEN 'sequences' WHEN 'f' THEN 'functions'
                     WHEN 'T' THEN 'types' WHEN 'n' THEN 'schemas' ELSE d.defaclobjtype::text END
       || ': ' || ${acl('d.defaclacl', `'c'`, 'd.defaclrole')} AS line
  FROM pg_default_acl d JOIN pg_namespace n ON n.oid = d.defaclnamespace AND n.nspname = $1`;

const SECTIONS = [
  SCHEMA, FUNCTIONS, RELATIONS, COLUMNS, CONSTRAINTS, INDEXES, SEQUENCES, POLICIES, RULES, TRIGGERS, EVENT_TRIGGERS,
  TYPES, DEFAULT_ACLS,
];

// Objects created by users (FirstNormalObjectId = 16384) whose OIDs may show inside names.
const USER_OIDS = `
SELECT oid FROM pg_class WHERE oid >= 16384 UNION SELECT oid FROM pg_proc WHERE oid >= 16384
 UNION SELECT oid FROM pg_type WHERE oid >= 16384 UNION SELECT oid FROM pg_namespace WHERE oid >= 16384`;
