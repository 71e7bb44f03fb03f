import type { CaseSpec, KeyKind, RowIndex, Val } from './spec.js';

/** Logical columns of a generated table; names.ts maps them to plain or odd physical names. */
export const VALUE_COLUMNS = ['a', 'b', 'c', 'ctxt', 'z', 'd', 'num', 'den', 'e', 'ok', 'tag', 'note'] as const;
export type ValueColumn = (typeof VALUE_COLUMNS)[number];
export type KeyColumn = 'id' | 'code' | 'site' | 'seq';
export type Logical = ValueColumn | KeyColumn | 'g' | 'total' | 'note2' | 'extra';

const ODD: Record<Logical, string> = {
  id: 'Id',
  code: 'Code "k"',
  site: 'Site',
  seq: 'séq',
  a: 'A col',
  b: 'b"q',
  c: 'Ç',
  ctxt: 'c TXT',
  z: 'Z',
  d: 'D',
  num: 'Num',
  den: 'dén',
  e: 'e e',
  ok: 'OK?',
  tag: 'Tag',
  note: 'note ✓',
  g: 'G gen',
  total: 'Total ✓',
  note2: 'Note Renamed',
  extra: 'Extra "x"',
};

export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

export function literal(value: string): string {
  return `'${value.replace(/'/g, "''")}'`;
}

/** The physical names of one case's objects. */
export class Names {
  readonly n: number;
  readonly spec: CaseSpec;
  constructor(n: number, spec: CaseSpec) {
    this.n = n;
    this.spec = spec;
  }

  col(logical: Logical): string {
    return this.spec.table.odd ? ODD[logical] : logical;
  }
  q(logical: Logical): string {
    return quoteIdent(this.col(logical));
  }

  /** The case's own schema: the twin, the domain, trigger functions and the audit table live there. */
  get caseSchema(): string {
    return `case_${this.n}`;
  }
  get schema(): string {
    if (!this.spec.table.ownSchema) return 'public';
    return this.spec.table.odd ? `Sch ${this.n} "ü"` : `s_${this.n}`;
  }
  get table(): string {
    return this.spec.table.odd ? `Odd "T" ${this.n} ü` : `t_${this.n}`;
  }
  get deployed(): string {
    return `${quoteIdent(this.schema)}.${quoteIdent(this.table)}`;
  }
  get twin(): string {
    return `${quoteIdent(this.caseSchema)}.${quoteIdent(this.table)}`;
  }
  get deployment(): string {
    return this.spec.table.odd ? `Prop.${this.n}-x` : `prop_${this.n}`;
  }
  get provenance(): string {
    return `${this.deployment}_model`;
  }
  get publication(): string {
    return `pub_${this.n}`;
  }

  get keyColumns(): KeyColumn[] {
    return keyColumns(this.spec.table.key);
  }

  /** The key of row i, as SQL literals of each key column. */
  keyLiterals(i: RowIndex): string[] {
    return keyOf(this.spec.table.key, i).map((v) => (typeof v === 'number' ? String(v) : literal(v)));
  }

  /** Key of row i as the text Postgres prints for each key column (for matching dead letters). */
  keyText(i: RowIndex): string {
    return JSON.stringify(keyOf(this.spec.table.key, i).map(String));
  }
}

export function keyColumns(kind: KeyKind): KeyColumn[] {
  return kind === 'int' ? ['id'] : kind === 'text' ? ['code'] : ['site', 'seq'];
}

export function keyOf(kind: KeyKind, i: RowIndex): (string | number)[] {
  if (kind === 'int') return [i];
  if (kind === 'text') return [`k${i}`];
  return [i <= 4 ? 'x' : 'y', ((i - 1) % 4) + 1];
}

/** The SQL type of each value column (d may be the case's domain). */
export function columnType(names: Names, column: ValueColumn): string {
  switch (column) {
    case 'a':
    case 'b':
      return 'real';
    case 'c':
    case 'z':
      return 'float8';
    case 'd':
      return names.spec.table.i32 === 'domain' ? `${quoteIdent(names.caseSchema)}.small_int` : 'int';
    case 'num':
    case 'den':
      return 'int';
    case 'e':
      return 'bigint';
    case 'ok':
      return 'boolean';
    default:
      return 'text';
  }
}

export function typed(names: Names, column: ValueColumn, value: Val): string {
  return `${value === null ? 'NULL' : literal(value)}::${columnType(names, column)}`;
}
