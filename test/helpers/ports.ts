import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { describe } from '../../src/errors.js';

/**
 * A port nothing listens on now, picked by the OS. Tests never use fixed ports: another
 * pgscore (`npm start` on 54329 and 9464) or another test run may hold any of them.
 */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

const ATTEMPTS = 5;

/**
 * Starts a server on a free port. Another process can take the port between the OS's answer
 * and the server's bind (Postgres cannot be asked to pick one itself): then it tries another.
 */
export async function onFreePort<T>(start: (port: number) => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    try {
      return await start(port);
    } catch (error) {
      if (attempt >= ATTEMPTS || !/could not (bind|create any TCP\/IP sockets)|EADDRINUSE|port is in use/i.test(describe(error))) throw error;
    }
  }
}
