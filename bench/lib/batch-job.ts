/**
 * The batch job a careful data engineer would write instead of pgscore, with `pg`,
 * pg-copy-streams and onnxruntime-node and no pgscore code: a server-side cursor over the
 * table in id order, one session.run per 10k-row chunk, the predictions COPYed (binary) into a
 * temp table and applied with one `UPDATE … FROM` per chunk, committed per chunk.
 *
 * Two connections: the reader holds the cursor in one read-only transaction while the writer
 * commits chunk by chunk (a cursor WITH HOLD on one connection would be materialised whole at
 * the first commit). The reader fetches the next chunk and the job scores it while the writer
 * applies the one before. One session, one prepared UPDATE, typed arrays throughout.
 */
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import ort from 'onnxruntime-node';
import pg from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
import { FEATURES } from './db.js';

export interface BatchJobOptions {
  /** Adds `AND t.id BETWEEN <chunk's first id> AND <last id>` to the UPDATE. */
  readonly ranged: boolean;
  readonly chunkRows?: number;
  /** EXPLAIN the first chunk's UPDATE (about a millisecond, inside the timing). */
  readonly explain?: boolean;
}

export interface BatchJobRun {
  readonly rows: number;
  readonly chunks: number;
  /**
   * Wall-clock ms waiting for a FETCH, in scoring (tensor in, session.run, p1 out) and in
   * COPY + UPDATE + COMMIT; the write of one chunk overlaps the fetch and scoring of the next.
   */
  readonly phases: { fetchMs: number; scoreMs: number; writeMs: number };
  /** The first chunk's UPDATE plan, one node per line, when asked for. */
  readonly plan?: string;
}

const WIDTH = FEATURES.length;
// Binary COPY: the 11-byte signature, flags and header-extension length; each tuple then has a
// field count and (length, value) per field: id int8, label int8, p1 float4.
const COPY_HEADER = Buffer.concat([Buffer.from('PGCOPY\n\xff\r\n\0', 'latin1'), Buffer.alloc(8)]);
const TUPLE_BYTES = 2 + (4 + 8) + (4 + 8) + (4 + 4);

/** The chunk's predictions as one binary COPY payload. */
export function copyPayload(ids: readonly string[], label: BigInt64Array, p1: Float32Array): Buffer {
  const buffer = Buffer.allocUnsafe(COPY_HEADER.length + ids.length * TUPLE_BYTES + 2);
  let at = COPY_HEADER.copy(buffer, 0);
  for (let r = 0; r < ids.length; r++) {
    at = buffer.writeInt16BE(3, at);
    at = buffer.writeInt32BE(8, at);
    at = buffer.writeBigInt64BE(BigInt(ids[r]!), at);
    at = buffer.writeInt32BE(8, at);
    at = buffer.writeBigInt64BE(label[r]!, at);
    at = buffer.writeInt32BE(4, at);
    at = buffer.writeFloatBE(p1[r]!, at);
  }
  buffer.writeInt16BE(-1, at);
  return buffer;
}

/** Scores every row of `table` (id + f0..f29, label and p1 written back); returns what it did. */
export async function runBatchJob(url: string, table: string, modelPath: string, options: BatchJobOptions): Promise<BatchJobRun> {
  const chunkRows = options.chunkRows ?? 10_000;
  const t = pg.escapeIdentifier(table);
  const session = await ort.InferenceSession.create(modelPath, { intraOpNumThreads: 1, interOpNumThreads: 1, executionMode: 'sequential', graphOptimizationLevel: 'all' });
  const input = session.inputNames[0]!;
  const reader = new pg.Client({ connectionString: url, application_name: 'bench batch job reader' });
  const writer = new pg.Client({ connectionString: url, application_name: 'bench batch job writer' });
  await Promise.all([reader.connect(), writer.connect()]);
  const phases = { fetchMs: 0, scoreMs: 0, writeMs: 0 };
  let rows = 0;
  let chunks = 0;
  let next: Promise<unknown[][]> | undefined;
  let plan: string | undefined;
  try {
    await reader.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    await reader.query(`DECLARE chunks NO SCROLL CURSOR FOR SELECT id, ${FEATURES.join(', ')} FROM ${t} ORDER BY id`);
    await writer.query('CREATE TEMP TABLE predictions (id bigint, label bigint, p1 real) ON COMMIT DELETE ROWS');
    const update = {
      name: 'apply_predictions',
      text: `UPDATE ${t} AS t SET label = p.label, p1 = p.p1 FROM predictions AS p WHERE t.id = p.id${options.ranged ? ' AND t.id BETWEEN $1 AND $2' : ''}`,
    };
    const fetchChunk = () => reader.query<unknown[]>({ text: `FETCH ${chunkRows} FROM chunks`, rowMode: 'array' }).then((r) => r.rows);

    // Chunk k is written while chunk k+1 is fetched and scored; one chunk in the writer at a time.
    const write = async (ids: string[], label: BigInt64Array, p1: Float32Array) => {
      const at = performance.now();
      const n = ids.length;
      await writer.query('BEGIN');
      await pipeline(Readable.from([copyPayload(ids, label, p1)]), writer.query(copyFrom('COPY predictions (id, label, p1) FROM STDIN (FORMAT binary)')));
      const values = options.ranged ? [ids[0], ids[n - 1]] : [];
      if (options.explain && plan === undefined) {
        const explained = await writer.query<{ 'QUERY PLAN': string }>(`EXPLAIN (COSTS OFF) ${update.text}`, values);
        plan = explained.rows.map((r) => r['QUERY PLAN'].trim()).join('\n');
      }
      const applied = await writer.query({ ...update, values });
      if (applied.rowCount !== n) throw new Error(`an UPDATE of ${n} predictions changed ${applied.rowCount} rows`);
      await writer.query('COMMIT');
      phases.writeMs += performance.now() - at;
      rows += n;
    };
    let writing: Promise<void> = Promise.resolve();

    next = fetchChunk();
    for (;;) {
      let at = performance.now();
      const chunk: unknown[][] = await next;
      phases.fetchMs += performance.now() - at;
      if (chunk.length === 0) break;
      next = chunk.length < chunkRows ? Promise.resolve([]) : fetchChunk();

      at = performance.now();
      const n = chunk.length;
      const features = new Float32Array(n * WIDTH);
      const ids = new Array<string>(n);
      for (let r = 0; r < n; r++) {
        const row = chunk[r]!;
        ids[r] = row[0] as string;
        for (let k = 0; k < WIDTH; k++) features[r * WIDTH + k] = row[k + 1] as number;
      }
      const out = await session.run({ [input]: new ort.Tensor('float32', features, [n, WIDTH]) }, ['label', 'probabilities']);
      // No ZipMap in these models: label int64 [n], probabilities float32 [n, 2].
      const label = out.label!.data as BigInt64Array;
      const probabilities = out.probabilities!.data as Float32Array;
      const p1 = new Float32Array(n);
      for (let r = 0; r < n; r++) p1[r] = probabilities[r * 2 + 1]!;
      phases.scoreMs += performance.now() - at;

      await writing;
      writing = write(ids, label, p1);
      // Awaited before the next write or after the loop; a failure meanwhile is not "unhandled".
      writing.catch(() => undefined);
      chunks++;
    }
    await writing;
    await reader.query('COMMIT');
  } finally {
    // A failed chunk leaves the next FETCH in flight; its rejection when the reader closes is expected.
    next?.catch(() => undefined);
    await Promise.allSettled([reader.end(), writer.end(), session.release()]);
  }
  return { rows, chunks, phases, ...(plan === undefined ? {} : { plan }) };
}
