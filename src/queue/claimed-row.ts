/**
 * One queued row as the worker scores it: claimed from a queue (notify transport) or decoded
 * from a Kafka message. Both transports hand the batch pipeline this shape.
 */
export interface ClaimedRow {
  /** Primary key values as text, in the plan's key order. */
  readonly keys: readonly string[];
  /** How long the row had been queued when it was read, in ms (for the latency statistics). */
  readonly ageMs: number;
  /** The row version the values were read at: only that version takes the prediction. */
  readonly xmin: string;
  readonly tid: string;
  /** How often the row could not be written back before (locked by someone else). */
  readonly attempts: number;
  /** The input values, in the plan's source order. */
  readonly values: readonly unknown[];
}

/** Key texts of rows, one array per key column: how keys travel as statement parameters. */
export function keyColumns(rows: readonly Pick<ClaimedRow, 'keys'>[], keyCount: number): string[][] {
  return Array.from({ length: keyCount }, (_, k) => rows.map((row) => row.keys[k]!));
}
