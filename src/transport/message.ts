import type { ClaimedRow } from '../queue/claimed-row.js';
import { ByteReader, ByteWriter, MessageFormatError } from './bytes.js';
import { decodeJsonMessage } from './message-v1.js';

/**
 * The Kafka message format. Format 2 (what the relay writes) is binary and carries many rows of
 * one deployment, all bound for one partition (partition.ts); format 1 (JSON, one row per message,
 * message-v1.ts) is still read, so messages already in the topic when a relay and its workers are
 * upgraded are scored. A message is format 2 when its first byte is 0 (a format-1 message starts
 * with `{`). Workers must be upgraded before relays: a worker that reads only format 1 records a
 * format-2 message as poison.
 *
 * Format 2, little-endian; str = varint byte length + UTF-8; varint = unsigned LEB128:
 *
 *   magic        4   00 50 47 53 ("\0PGS")
 *   version      u8  2
 *   deployment   u32 the deployment's id
 *   fingerprint  str the claim layout the values were read with (a worker that serves another
 *                    version or mapping of the deployment queues the rows again instead)
 *   key columns  u8  primary-key columns per row (k)
 *   rows         u32 row count (n)
 *   n × row:
 *     keys       k × str   primary key values as text (exact for int8 and numeric)
 *     xmin       str       the row version the values were read at (the write-back must still find it)
 *     ctid       str       where that version was, e.g. "(0,5)"
 *     queued at  f64       epoch ms when the row was queued (latency statistics)
 *     attempts   varint    failed write-backs so far (the requeue's backoff)
 *     values     varint count, then each value tagged:
 *                  0 NULL, 1 false, 2 true, 3 f64 number (NaN and ±Infinity included),
 *                  4 str text, 5 array (varint count + tagged elements),
 *                  6 str JSON text of any other value (as format 1 carried it),
 *                  7 f32 number (one a float32 holds exactly: values of real columns,
 *                    integers below 2^24)
 *
 * Why binary and many rows per message: at one JSON message per row, encoding, the Kafka record
 * framing on both sides, JSON.parse and schema validation cost the relay and the worker more than
 * the database work of a row (README "Performance"). Numbers travel as float64, so every value a
 * row's inputs produce reaches the model exactly as the notify transport reads it.
 */
export const MESSAGE_VERSION = 2;

const MAGIC = [0x00, 0x50, 0x47, 0x53];
/**
 * A message is closed once it holds this many bytes: well under the broker's default
 * message.max.bytes (1 MiB), which also bounds a partition's share of one produce request.
 */
export const MAX_MESSAGE_BYTES = 512 * 1024;

const enum Tag {
  Null = 0,
  False = 1,
  True = 2,
  Number = 3,
  Text = 4,
  Array = 5,
  Json = 6,
  Float32 = 7,
}

/** One row as a message carries it. */
export interface RelayedRow {
  readonly keys: readonly string[];
  readonly xmin: string;
  readonly tid: string;
  /** Epoch ms when the row was queued. */
  readonly queuedAt: number;
  readonly attempts: number;
  readonly values: readonly unknown[];
}

export interface RowsMessage {
  readonly version: number;
  readonly deployment: number;
  readonly fingerprint: string;
  /** Primary-key columns of every row (format 1: of its one row). */
  readonly keyCount: number;
  readonly rows: readonly RelayedRow[];
}

export type Decoded = { ok: true; message: RowsMessage } | { ok: false; reason: string };

/** What the relay knows of the deployment it encodes rows of. */
export interface EncodingDeployment {
  readonly id: number;
  readonly keyCount: number;
  readonly sql: { readonly fingerprint: string };
}

function writeValue(out: ByteWriter, value: unknown): void {
  if (typeof value === 'number') {
    // Values of real columns (and integers below 2^24) are float32 numbers: half the bytes.
    if (Math.fround(value) === value) {
      out.u8(Tag.Float32);
      out.f32(value);
    } else {
      out.u8(Tag.Number);
      out.f64(value);
    }
  } else if (typeof value === 'string') {
    out.u8(Tag.Text);
    out.str(value);
  } else if (value === null || value === undefined) {
    out.u8(Tag.Null);
  } else if (typeof value === 'boolean') {
    out.u8(value ? Tag.True : Tag.False);
  } else if (Array.isArray(value)) {
    out.u8(Tag.Array);
    out.varint(value.length);
    for (const element of value) writeValue(out, element);
  } else {
    out.u8(Tag.Json);
    out.str(JSON.stringify(value));
  }
}

function readValue(input: ByteReader): unknown {
  const tag = input.u8('a value tag');
  switch (tag) {
    case Tag.Null:
      return null;
    case Tag.False:
      return false;
    case Tag.True:
      return true;
    case Tag.Number:
      return input.f64('a number');
    case Tag.Float32:
      return input.f32('a number');
    case Tag.Text:
      return input.str('a text value');
    case Tag.Array: {
      const count = input.varint('an array length');
      if (count > input.remaining) throw new MessageFormatError(`an array of ${count} elements at byte ${input.offset} is longer than the rest of the message`);
      const array = new Array<unknown>(count);
      for (let i = 0; i < count; i++) array[i] = readValue(input);
      return array;
    }
    case Tag.Json: {
      const text = input.str('a JSON value');
      try {
        return JSON.parse(text) as unknown;
      } catch (error) {
        throw new MessageFormatError(`a JSON value before byte ${input.offset} does not parse: ${(error as Error).message}`);
      }
    }
    default:
      throw new MessageFormatError(`unknown value tag ${tag} at byte ${input.offset - 1}`);
  }
}

/** Where messages are built (encodeRows is synchronous, so one serves every call); take() copies each out. */
const scratch = new ByteWriter(64 * 1024);

/**
 * Rows of one deployment (bound for one partition) as format-2 messages: one, or more when they
 * exceed maxBytes. `now` and each row's age give its queue time.
 */
export function encodeRows(deployment: EncodingDeployment, rows: readonly ClaimedRow[], now: number, maxBytes = MAX_MESSAGE_BYTES): Buffer[] {
  const messages: Buffer[] = [];
  const out = scratch;
  out.reset();
  let count = 0;
  let countAt = 0;
  const open = () => {
    for (const byte of MAGIC) out.u8(byte);
    out.u8(MESSAGE_VERSION);
    out.u32(deployment.id);
    out.str(deployment.sql.fingerprint);
    out.u8(deployment.keyCount);
    countAt = out.length;
    out.u32(0);
    count = 0;
  };
  const close = () => {
    out.u32At(countAt, count);
    messages.push(out.take());
  };
  open();
  for (const row of rows) {
    if (row.keys.length !== deployment.keyCount) {
      throw new Error(`a claimed row of deployment ${deployment.id} has ${row.keys.length} key values, its plan ${deployment.keyCount}`);
    }
    if (count > 0 && out.length >= maxBytes) {
      close();
      open();
    }
    for (const key of row.keys) out.str(key);
    out.str(row.xmin);
    out.str(row.tid);
    out.f64(now - row.ageMs);
    out.varint(row.attempts);
    out.varint(row.values.length);
    for (const value of row.values) writeValue(out, value);
    count += 1;
  }
  close();
  return messages;
}

function decodeBinary(value: Buffer): RowsMessage {
  const input = new ByteReader(value);
  for (const byte of MAGIC) {
    if (input.u8('the magic bytes') !== byte) throw new MessageFormatError('does not start with the magic bytes 00 50 47 53');
  }
  const version = input.u8('the format version');
  if (version !== MESSAGE_VERSION) {
    throw new MessageFormatError(`format version ${version} is not known to this worker (it reads 1 and ${MESSAGE_VERSION}); upgrade it`);
  }
  const deployment = input.u32('the deployment id');
  const fingerprint = input.str('the fingerprint');
  const keyCount = input.u8('the key column count');
  const count = input.u32('the row count');
  if (keyCount === 0) throw new MessageFormatError('has 0 key columns');
  const rows = new Array<RelayedRow>(count);
  for (let r = 0; r < count; r++) {
    if (input.remaining === 0) throw new MessageFormatError(`truncated: ${r} of ${count} rows present`);
    const keys = new Array<string>(keyCount);
    for (let k = 0; k < keyCount; k++) keys[k] = input.str('a key value');
    const xmin = input.str('a row version');
    if (!/^\d+$/.test(xmin)) throw new MessageFormatError(`row ${r + 1}: row version ${JSON.stringify(xmin)} is not an xid`);
    const tid = input.str('a row place');
    if (!/^\(\d+,\d+\)$/.test(tid)) throw new MessageFormatError(`row ${r + 1}: row place ${JSON.stringify(tid)} is not a ctid`);
    const queuedAt = input.f64('a queue time');
    const attempts = input.varint('an attempt count');
    const valueCount = input.varint('a value count');
    if (valueCount > input.remaining) throw new MessageFormatError(`row ${r + 1}: ${valueCount} values are more than the rest of the message`);
    const values = new Array<unknown>(valueCount);
    for (let v = 0; v < valueCount; v++) values[v] = readValue(input);
    rows[r] = { keys, xmin, tid, queuedAt, attempts, values };
  }
  if (input.remaining !== 0) throw new MessageFormatError(`${input.remaining} byte(s) after the last of ${count} rows`);
  return { version, deployment, fingerprint, keyCount, rows };
}

/** A message's rows, or why it is not a pgscore message (it becomes a dead letter in ml.errors). */
export function decodeMessage(value: Buffer | null): Decoded {
  if (!value || value.length === 0) return { ok: false, reason: 'message has no value' };
  if (value[0] !== 0) return decodeJsonMessage(value);
  try {
    return { ok: true, message: decodeBinary(value) };
  } catch (error) {
    if (!(error instanceof MessageFormatError)) throw error;
    return { ok: false, reason: `message is not a pgscore row message v${MESSAGE_VERSION}: ${error.message}` };
  }
}

/**
 * Rows a message carries, read from its header without decoding it (1 for a format-1 message, and
 * for one that is not readable: decodeMessage says why).
 */
export function rowsIn(value: Buffer | null): number {
  if (!value || value.length < 10 || value[0] !== 0) return 1;
  const fingerprintLength = value[9]!;
  const countAt = 10 + fingerprintLength + 1;
  if (fingerprintLength >= 0x80 || countAt + 4 > value.length) return 1;
  return Math.max(1, value.readUInt32LE(countAt));
}

/** A relayed row as the row the batch pipeline scores, with its age now. */
export function toClaimedRow(row: RelayedRow, now: number): ClaimedRow {
  return { keys: row.keys, ageMs: Math.max(0, now - row.queuedAt), xmin: row.xmin, tid: row.tid, attempts: row.attempts, values: row.values };
}
