/** A published row as the WAL carries it: its key columns (or every column, under REPLICA IDENTITY FULL), as text. */
export type CapturedRow = Readonly<Record<string, string | null>>;

/**
 * Rows read from the WAL and not yet queued, per table (its oid), each once (a row written by
 * several transactions is queued once), and the end of the last transaction they came through.
 */
export class CaptureBuffer {
  readonly #rows = new Map<number, Map<string, CapturedRow>>();
  #count = 0;
  #lsn: string | undefined;

  /** A committed transaction's rows, per table oid. */
  add(rows: ReadonlyMap<number, readonly CapturedRow[]>): void {
    for (const [table, list] of rows) {
      let seen = this.#rows.get(table);
      if (!seen) this.#rows.set(table, (seen = new Map()));
      for (const row of list) {
        const text = JSON.stringify(row);
        if (!seen.has(text)) this.#count++;
        seen.set(text, row);
      }
    }
  }

  /** The end of the transaction just added (or skipped). */
  through(lsn: string): void {
    this.#lsn = lsn;
  }

  get lsn(): string | undefined {
    return this.#lsn;
  }

  get rows(): number {
    return this.#count;
  }

  get empty(): boolean {
    return this.#count === 0;
  }

  /** ml._capture's argument: {"<table oid>": [{"<column>": "<value>", ...}, ...]}. */
  toJson(): Record<string, CapturedRow[]> {
    return Object.fromEntries([...this.#rows].map(([table, rows]) => [String(table), [...rows.values()]]));
  }
}
