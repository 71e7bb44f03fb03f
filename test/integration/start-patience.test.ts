import { createConnection, createServer, type AddressInfo, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Worker } from '../../src/worker/worker.js';
import { createTestDatabase, startWorker, waitFor, type TestDatabase } from '../helpers/db.js';
import { createSumsTable, registerSums, SUMS_INPUTS, SUMS_OUTPUTS } from '../helpers/sums.js';

/**
 * A TCP proxy in front of Postgres that lets the first connection through, then resets every
 * new one for a while: a server that shuts down (or restarts) just after a worker's first query.
 */
async function flakyProxy(target: URL, refuseMs: number) {
  const sockets = new Set<Socket>();
  let connections = 0;
  let refusingUntil = Infinity;
  let refused = 0;
  const server = createServer((client) => {
    sockets.add(client);
    client.on('close', () => sockets.delete(client));
    connections++;
    if (connections === 1) refusingUntil = Date.now() + refuseMs;
    else if (Date.now() < refusingUntil) {
      refused++;
      client.destroy();
      return;
    }
    const upstream = createConnection({ host: target.hostname, port: Number(target.port) });
    sockets.add(upstream);
    upstream.on('close', () => sockets.delete(upstream));
    client.pipe(upstream).pipe(client);
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = new URL(target);
  url.hostname = '127.0.0.1';
  url.port = String((server.address() as AddressInfo).port);
  return {
    url: url.toString(),
    refused: () => refused,
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/**
 * The chaos drain saw a worker exit with "the database system is shutting down": its first
 * query had passed, the next step of its start met the restart. Every step of a start waits
 * for the database (up to a minute), not only the first.
 */
describe('a worker whose database goes away during its start', () => {
  let db: TestDatabase;
  let worker: Worker | undefined;
  let proxy: Awaited<ReturnType<typeof flakyProxy>>;

  beforeAll(async () => {
    db = await createTestDatabase();
    await registerSums(db);
    await createSumsTable(db, 'orders');
    await db.sql(`SELECT ml.deploy('orders', 'orders', 'sums', $1, $2)`, [SUMS_INPUTS, SUMS_OUTPUTS]);
    proxy = await flakyProxy(new URL(db.workerUrl), 1500);
  }, 120_000);
  afterAll(async () => {
    await worker?.stop();
    await proxy?.close();
    await db?.drop();
  });

  it('waits for it, starts, and scores', async () => {
    const started = startWorker({ ...db, workerUrl: proxy.url });
    worker = await started;
    expect(proxy.refused()).toBeGreaterThan(0);
    await db.sql(`INSERT INTO orders VALUES (1, 1, 2, 3, 4, 1005, true, 't')`);
    const [row] = await waitFor(async () => {
      const rows = await db.sql<{ total: number }>('SELECT total FROM orders WHERE id = 1 AND total IS NOT NULL');
      return rows.length ? rows : undefined;
    }, 'the row scored');
    expect(row!.total).toBe(1 + 2 + 3 + 4 + 1005 + 1);
  }, 120_000);
});
