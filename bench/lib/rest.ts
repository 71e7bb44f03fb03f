import { spawn } from 'node:child_process';
import http from 'node:http';
import { fileURLToPath } from 'node:url';
import type pg from 'pg';
import { FEATURES } from './db.js';
import { sleep } from './stats.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

export interface RestService {
  readonly port: number;
  predict(rows: unknown[][]): Promise<{ label: number[]; p1: number[] }>;
  stop(): Promise<void>;
}

/** Starts bench/lib/rest-server.ts as a child process (its own event loop) and a keep-alive client. */
export async function startRestService(modelPath: string, maxSockets = 64): Promise<RestService> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'bench/lib/rest-server.ts', modelPath], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (c: Buffer) => (err += c.toString()));
  const port = await new Promise<number>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (c: Buffer) => {
      out += c.toString();
      const m = /listening (\d+)/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    child.on('exit', (code) => reject(new Error(`REST server exited with ${code}: ${err}`)));
  });
  const client = restClient(port, maxSockets);
  return {
    port,
    predict: client.predict,
    async stop() {
      client.close();
      const gone = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.kill('SIGTERM');
      await gone;
    },
  };
}

/**
 * A keep-alive JSON client for POST /predict on 127.0.0.1:port, the contract of
 * bench/lib/rest-server.ts (and of bench/python/service.py).
 */
export function restClient(port: number, maxSockets = 64): Pick<RestService, 'predict'> & { close(): void } {
  const agent = new http.Agent({ keepAlive: true, maxSockets });
  return {
    predict(rows) {
      const body = JSON.stringify({ rows });
      return new Promise((resolve, reject) => {
        const req = http.request(
          { host: '127.0.0.1', port, path: '/predict', method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } },
          (res) => {
            const chunks: Buffer[] = [];
            res.on('data', (c: Buffer) => chunks.push(c));
            res.on('end', () => {
              const text = Buffer.concat(chunks).toString('utf8');
              if (res.statusCode !== 200) reject(new Error(`REST ${res.statusCode}: ${text}`));
              else resolve(JSON.parse(text) as { label: number[]; p1: number[] });
            });
          },
        );
        req.on('error', reject);
        req.end(body);
      });
    },
    close() {
      agent.destroy();
    },
  };
}

const READ_PAGE = (table: string) => ({
  name: `rest_read_${table}`,
  text: `SELECT id, ${FEATURES.join(', ')} FROM ${table} WHERE p1 IS NULL ORDER BY id LIMIT 1000`,
  rowMode: 'array' as const,
});

/**
 * Tutorial form: read a page of unscored rows, then one POST and one UPDATE per row, `inFlight`
 * rows at a time. Runs until no unscored row is left; returns rows scored.
 */
export async function perRowLoop(db: pg.Pool, rest: RestService, table: string, inFlight = 50): Promise<number> {
  let scored = 0;
  for (;;) {
    const { rows } = await db.query<unknown[]>(READ_PAGE(table));
    if (rows.length === 0) return scored;
    let next = 0;
    const lane = async () => {
      while (next < rows.length) {
        const row = rows[next++]!;
        const { label, p1 } = await rest.predict([row.slice(1)]);
        await db.query({ name: `rest_update_${table}`, text: `UPDATE ${table} SET label = $2, p1 = $3 WHERE id = $1`, values: [row[0], label[0], p1[0]] });
        scored++;
      }
    };
    await Promise.all(Array.from({ length: inFlight }, lane));
  }
}

/** One batch: read up to 1000 unscored rows, one POST, one UPDATE … FROM unnest. Returns rows scored. */
export async function batchedStep(db: pg.Pool, rest: RestService, table: string): Promise<number> {
  const { rows } = await db.query<unknown[]>(READ_PAGE(table));
  if (rows.length === 0) return 0;
  const { label, p1 } = await rest.predict(rows.map((r) => r.slice(1)));
  await db.query({
    name: `rest_write_${table}`,
    text: `UPDATE ${table} t SET label = u.label, p1 = u.p1 FROM unnest($1::bigint[], $2::bigint[], $3::real[]) AS u(id, label, p1) WHERE t.id = u.id`,
    values: [rows.map((r) => r[0]), label, p1],
  });
  return rows.length;
}

/** Batched form on a backlog: batches back to back until no unscored row is left. */
export async function batchedDrain(db: pg.Pool, rest: RestService, table: string): Promise<number> {
  let scored = 0;
  for (;;) {
    const n = await batchedStep(db, rest, table);
    if (n === 0) return scored;
    scored += n;
  }
}

/** Batched form as a service: drain whatever is unscored, then sleep pollMs, until stopped. */
export function batchedPoller(db: pg.Pool, rest: RestService, table: string, pollMs: number): { stop(): Promise<void> } {
  let running = true;
  const loop = (async () => {
    while (running) {
      while ((await batchedStep(db, rest, table)) === 1000);
      await sleep(pollMs);
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
    },
  };
}
