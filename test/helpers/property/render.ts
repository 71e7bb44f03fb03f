import { keyOf, literal, Names, quoteIdent, typed, VALUE_COLUMNS, type ValueColumn } from './names.js';
import type { Op, RowIndex, Values } from './spec.js';

/** What ALTER TABLE statements changed so far (the same on the twin and the deployed table). */
export interface TableState {
  note: 'note' | 'note2';
  extra: boolean;
}

/** The DDL of the case: schema, domain, the deployed table and its twin, triggers, publication, RLS. */
export function caseDdl(names: Names, tenantB: { table: string; queue: string }): string[] {
  const t = names.spec.table;
  const statements = [`CREATE SCHEMA ${quoteIdent(names.caseSchema)}`];
  if (t.ownSchema) statements.push(`CREATE SCHEMA ${quoteIdent(names.schema)}`);
  statements.push(`CREATE DOMAIN ${quoteIdent(names.caseSchema)}.small_int AS int CHECK (VALUE > -100)`);
  statements.push(`CREATE TABLE ${quoteIdent(names.caseSchema)}.audit (tbl text, op text, at timestamptz DEFAULT clock_timestamp())`);
  statements.push(...triggerFunction(names, tenantB));
  for (const [schema, table] of [
    [names.schema, names.table],
    [names.caseSchema, names.table],
  ] as const) {
    statements.push(...tableDdl(names, schema, table));
  }
  if (t.publication !== 'none') statements.push(`CREATE PUBLICATION ${quoteIdent(names.publication)} FOR TABLE ${names.deployed}, ${names.twin}`);
  return statements;
}

function tableDdl(names: Names, schema: string, table: string): string[] {
  const t = names.spec.table;
  const qualified = `${quoteIdent(schema)}.${quoteIdent(table)}`;
  const keys = names.keyColumns;
  const keyDefs = keys.map((k) => `${names.q(k)} ${k === 'id' || k === 'seq' ? 'int' : 'text'}`);
  const values = VALUE_COLUMNS.map((c) => `${names.q(c)} ${columnType(names, c)}`);
  const extras: string[] = [];
  if (t.f64 === 'generated') extras.push(`${names.q('g')} float8 GENERATED ALWAYS AS (${names.q('c')} * 2) STORED`);
  if (t.predictionCheck) extras.push(`${names.q('total')} float8 CHECK (${names.q('total')} < 1000000)`);
  if (t.appCheck) extras.push(`CHECK (${names.q('e')} > -1000000)`);
  const keyList = keys.map((k) => names.q(k)).join(', ');
  const out = [
    `CREATE TABLE ${qualified} (${[...keyDefs, ...values, ...extras, `PRIMARY KEY (${keyList})`].join(', ')})${partitionClause(names)}`,
    ...partitions(names, schema, table),
  ];
  if (t.layout === 'inherited') out.push(`CREATE TABLE ${childOf(qualified)} () INHERITS (${qualified})`);
  const fn = `${quoteIdent(names.caseSchema)}.pgs_trigger`;
  if (t.trigger === 'noop' || t.trigger === 'raising') {
    out.push(`CREATE TRIGGER owner_trigger BEFORE UPDATE ON ${qualified} FOR EACH ROW EXECUTE FUNCTION ${fn}()`);
  } else if (t.trigger === 'guarded') {
    out.push(`CREATE TRIGGER owner_trigger AFTER INSERT OR UPDATE ON ${qualified} FOR EACH ROW
      WHEN (current_setting('pgscore.writeback', true) IS DISTINCT FROM 'on') EXECUTE FUNCTION ${fn}()`);
  } else if (t.trigger === 'audit') {
    out.push(`CREATE TRIGGER owner_trigger AFTER INSERT OR UPDATE ON ${qualified} FOR EACH ROW EXECUTE FUNCTION ${fn}()`);
  } else if (t.trigger === 'hostile') {
    out.push(`CREATE TRIGGER owner_trigger AFTER UPDATE ON ${qualified} FOR EACH ROW EXECUTE FUNCTION ${fn}()`);
  }
  if (t.publication === 'nothing') {
    out.push(`DO $$ DECLARE r regclass; BEGIN
      FOR r IN SELECT relid FROM pg_partition_tree(${literal(qualified)}::regclass) LOOP
        EXECUTE format('ALTER TABLE %s REPLICA IDENTITY NOTHING', r);
      END LOOP; END $$`);
  }
  if (t.rls) {
    out.push(`ALTER TABLE ${qualified} ENABLE ROW LEVEL SECURITY`);
    out.push(`CREATE POLICY owner_rows ON ${qualified} TO CURRENT_USER USING (true)`);
  }
  return out;
}

function columnType(names: Names, c: ValueColumn): string {
  return typed(names, c, null).slice('NULL::'.length);
}

function triggerFunction(names: Names, tenantB: { table: string; queue: string }): string[] {
  const fn = `${quoteIdent(names.caseSchema)}.pgs_trigger`;
  const total = literal(names.col('total'));
  const body: Record<string, string> = {
    none: 'RETURN NEW;',
    noop: 'RETURN NEW;',
    guarded: `INSERT INTO ${quoteIdent(names.caseSchema)}.audit (tbl, op) VALUES (TG_TABLE_NAME, TG_OP); RETURN NULL;`,
    audit: `INSERT INTO ${quoteIdent(names.caseSchema)}.audit (tbl, op) VALUES (TG_TABLE_NAME, TG_OP); RETURN NULL;`,
    // Only the write-back changes the prediction column: the application's own updates pass.
    raising: `IF NEW.${names.q('tag')} = 'boom' AND to_jsonb(NEW)->${total} IS DISTINCT FROM to_jsonb(OLD)->${total} THEN
        RAISE EXCEPTION 'rows tagged boom take no prediction' USING ERRCODE = 'check_violation';
      END IF;
      RETURN NEW;`,
    // Whoever fires it tries to reach the other tenant: its table and its queue.
    hostile: `BEGIN UPDATE public.${quoteIdent(tenantB.table)} SET total = -1; EXCEPTION WHEN others THEN NULL; END;
      BEGIN DELETE FROM ml.${quoteIdent(tenantB.queue)}; EXCEPTION WHEN others THEN NULL; END;
      BEGIN INSERT INTO ${quoteIdent(names.caseSchema)}.audit (tbl, op) SELECT 'stolen', string_agg(total::text, ',') FROM public.${quoteIdent(tenantB.table)};
      EXCEPTION WHEN others THEN NULL; END;
      RETURN NULL;`,
  };
  return [`CREATE FUNCTION ${fn}() RETURNS trigger LANGUAGE plpgsql AS $fn$ BEGIN ${body[names.spec.table.trigger]} END $fn$`];
}

/** The child table of an 'inherited' layout: the parent's name with " child". */
export function childOf(qualified: string): string {
  return `${qualified.slice(0, -1)} child"`;
}

function partitionClause(names: Names): string {
  const t = names.spec.table;
  if (t.layout === 'plain' || t.layout === 'inherited') return '';
  const first = names.q(names.keyColumns[0]!);
  return t.layout === 'list' ? ` PARTITION BY LIST (${first})` : ` PARTITION BY RANGE (${first})`;
}

/** Partitions split the 8 rows: range at row 5, list odd/even, multi-level with a second level in the first range. */
function partitions(names: Names, schema: string, table: string): string[] {
  const t = names.spec.table;
  if (t.layout === 'plain' || t.layout === 'inherited') return [];
  const parent = `${quoteIdent(schema)}.${quoteIdent(table)}`;
  const part = (suffix: string) => `${quoteIdent(schema)}.${quoteIdent(`${table} p${suffix}`)}`;
  const first = (i: RowIndex) => {
    const v = keyOf(t.key, i)[0]!;
    return typeof v === 'number' ? String(v) : literal(v);
  };
  const composite = t.key === 'composite';
  if (t.layout === 'range') {
    return [
      `CREATE TABLE ${part('1')} PARTITION OF ${parent} FOR VALUES FROM (MINVALUE) TO (${first(5)})`,
      `CREATE TABLE ${part('2')} PARTITION OF ${parent} FOR VALUES FROM (${first(5)}) TO (MAXVALUE)`,
    ];
  }
  if (t.layout === 'list') {
    if (composite) {
      return [`CREATE TABLE ${part('1')} PARTITION OF ${parent} FOR VALUES IN ('x')`, `CREATE TABLE ${part('2')} PARTITION OF ${parent} FOR VALUES IN ('y')`];
    }
    return [
      `CREATE TABLE ${part('1')} PARTITION OF ${parent} FOR VALUES IN (${[1, 3, 5, 7].map(first).join(', ')})`,
      `CREATE TABLE ${part('2')} PARTITION OF ${parent} FOR VALUES IN (${[2, 4, 6].map(first).join(', ')})`,
      `CREATE TABLE ${part('3')} PARTITION OF ${parent} DEFAULT`,
    ];
  }
  // multi: two levels.
  if (composite) {
    return [
      `CREATE TABLE ${part('1')} PARTITION OF ${parent} FOR VALUES FROM (MINVALUE) TO ('y') PARTITION BY RANGE (${names.q('seq')})`,
      `CREATE TABLE ${part('1a')} PARTITION OF ${part('1')} FOR VALUES FROM (MINVALUE) TO (3)`,
      `CREATE TABLE ${part('1b')} PARTITION OF ${part('1')} FOR VALUES FROM (3) TO (MAXVALUE)`,
      `CREATE TABLE ${part('2')} PARTITION OF ${parent} FOR VALUES FROM ('y') TO (MAXVALUE)`,
    ];
  }
  return [
    `CREATE TABLE ${part('1')} PARTITION OF ${parent} FOR VALUES FROM (MINVALUE) TO (${first(5)}) PARTITION BY LIST (${names.q(names.keyColumns[0]!)})`,
    `CREATE TABLE ${part('1a')} PARTITION OF ${part('1')} FOR VALUES IN (${first(1)}, ${first(2)})`,
    `CREATE TABLE ${part('1b')} PARTITION OF ${part('1')} DEFAULT`,
    `CREATE TABLE ${part('2')} PARTITION OF ${parent} FOR VALUES FROM (${first(5)}) TO (MAXVALUE)`,
  ];
}

/** Columns an INSERT writes: the key and every value column (note under its current name). */
function insertColumns(names: Names, state: TableState): string[] {
  return [...names.keyColumns.map((k) => names.q(k)), ...VALUE_COLUMNS.map((c) => (c === 'note' ? names.q(state.note) : names.q(c)))];
}

function rowValues(names: Names, i: RowIndex, v: Values): string[] {
  return [...names.keyLiterals(i), ...VALUE_COLUMNS.map((c) => typed(names, c, v[c] ?? null))];
}

function keyPredicate(names: Names, rows: readonly RowIndex[], alias = ''): string {
  const cols = names.keyColumns.map((k) => `${alias}${names.q(k)}`);
  return `(${cols.join(', ')}) IN (${rows.map((i) => `(${names.keyLiterals(i).join(', ')})`).join(', ')})`;
}

function assignments(names: Names, state: TableState, set: Values, from?: string): string {
  return VALUE_COLUMNS.filter((c) => from || set[c] !== undefined)
    .map((c) => {
      const column = c === 'note' ? names.q(state.note) : names.q(c);
      return `${column} = ${from ? `${from}.${column}` : typed(names, c, set[c] ?? null)}`;
    })
    .join(', ');
}

/** COPY text format: NULL is \N; backslash, tab and newlines are escaped. */
export function copyLine(names: Names, i: RowIndex, v: Values): string {
  const keys = keyOf(names.spec.table.key, i).map(String);
  const values = VALUE_COLUMNS.map((c) => {
    const value = v[c] ?? null;
    return value === null ? '\\N' : value.replace(/\\/g, '\\\\').replace(/\t/g, '\\t').replace(/\n/g, '\\n').replace(/\r/g, '\\r');
  });
  return `${[...keys, ...values].join('\t')}\n`;
}

export interface Rendered {
  /** The statement with TABLE standing for the table's qualified name. */
  readonly sql: (table: string) => string;
  /** For COPY: the lines to stream. */
  readonly copy?: string;
  /** Applied to the state once the statement succeeded. */
  readonly after?: (state: TableState) => void;
}

export function renderOp(names: Names, state: TableState, op: Op): Rendered {
  const cols = insertColumns(names, state).join(', ');
  const keys = names.keyColumns.map((k) => names.q(k)).join(', ');
  switch (op.kind) {
    case 'insertChild':
    case 'insert': {
      const into = op.kind === 'insertChild' && names.spec.table.layout === 'inherited' ? childOf : (t: string) => t;
      return { sql: (t) => `INSERT INTO ${into(t)} (${cols}) VALUES ${op.rows.map(([i, v]) => `(${rowValues(names, i, v).join(', ')})`).join(', ')}` };
    }
    case 'upsert': {
      const action = op.action === 'nothing' ? 'DO NOTHING' : `DO UPDATE SET ${assignments(names, state, {}, 'EXCLUDED')}`;
      return {
        sql: (t) =>
          `INSERT INTO ${t} (${cols}) VALUES ${op.rows.map(([i, v]) => `(${rowValues(names, i, v).join(', ')})`).join(', ')} ON CONFLICT (${keys}) ${action}`,
      };
    }
    case 'bulk': {
      const keys = names.spec.table.key === 'int' ? ['g'] : names.spec.table.key === 'text' ? [`'b' || g`] : [`'y'`, 'g'];
      const values = VALUE_COLUMNS.map((c) => typed(names, c, op.values[c] ?? null));
      const last = op.first + (op.count - 1) * op.step;
      return { sql: (t) => `INSERT INTO ${t} (${cols}) SELECT ${[...keys, ...values].join(', ')} FROM generate_series(${op.first}, ${last}, ${op.step}) g` };
    }
    case 'copy':
      return { sql: (t) => `COPY ${t} (${cols}) FROM STDIN`, copy: op.rows.map(([i, v]) => copyLine(names, i, v)).join('') };
    case 'merge': {
      const on = names.keyColumns.map((k) => `t.${names.q(k)} = s.${names.q(k)}`).join(' AND ');
      return {
        sql: (t) =>
          `MERGE INTO ${t} AS t USING (VALUES ${op.rows.map(([i, v]) => `(${rowValues(names, i, v).join(', ')})`).join(', ')}) AS s (${cols}) ON ${on}
           WHEN MATCHED THEN UPDATE SET ${assignments(names, state, {}, 's')}
           WHEN NOT MATCHED THEN INSERT (${cols}) VALUES (${insertColumns(names, state).map((c) => `s.${c}`).join(', ')})`,
      };
    }
    case 'update': {
      const where = op.where === 'all' ? '' : ` WHERE ${keyPredicate(names, op.where)}`;
      return { sql: (t) => `UPDATE ${t} SET ${assignments(names, state, op.set)}${where}` };
    }
    case 'delete':
      return { sql: (t) => `DELETE FROM ${t} WHERE ${keyPredicate(names, op.where)}` };
    case 'move': {
      const to = names.keyLiterals(op.to);
      const set = names.keyColumns.map((k, j) => `${names.q(k)} = ${to[j]}`).join(', ');
      return { sql: (t) => `UPDATE ${t} SET ${set} WHERE ${keyPredicate(names, [op.from])}` };
    }
    case 'truncate':
      return { sql: (t) => `TRUNCATE ${t}` };
    case 'addColumn':
      return { sql: (t) => `ALTER TABLE ${t} ADD COLUMN ${names.q('extra')} int DEFAULT 7`, after: (s) => void (s.extra = true) };
    case 'renameNote':
      return { sql: (t) => `ALTER TABLE ${t} RENAME COLUMN ${names.q('note')} TO ${names.q('note2')}`, after: (s) => void (s.note = 'note2') };
  }
}

/** The application's columns, as text, to compare the twin with the deployed table. */
export function appColumns(names: Names, state: TableState): string[] {
  const cols = [...names.keyColumns, ...VALUE_COLUMNS.map((c) => (c === 'note' ? state.note : c))].map((c) => names.q(c));
  if (names.spec.table.f64 === 'generated') cols.push(names.q('g'));
  if (state.extra) cols.push(names.q('extra'));
  return cols;
}
