import { setTimeout as sleep } from 'node:timers/promises';
import type pg from 'pg';
import { describe } from '../errors.js';
import { formatStatus, readStatus } from '../status.js';

const CLEAR_SCREEN = '\x1b[H\x1b[2J';

/**
 * `pgscore status --watch`: ml.status as a table, redrawn every everyMs until stop resolves
 * (the CLI's SIGINT). On a terminal each frame replaces the last; piped, frames follow each
 * other. A first read that fails throws (a wrong URL exits at once); a later one is shown in
 * place of the table and the next refresh tries again, so a Postgres restart does not end it.
 */
export async function watchStatus(
  pool: pg.Pool,
  out: NodeJS.WritableStream & { isTTY?: boolean },
  stop: Promise<unknown>,
  everyMs = 2_000,
): Promise<void> {
  const stopped = new AbortController();
  void stop.then(() => stopped.abort());
  let first = true;
  while (!stopped.signal.aborted) {
    let body: string;
    try {
      body = formatStatus(await readStatus(pool));
    } catch (error) {
      if (first) throw error;
      body = `cannot read ml.status: ${describe(error)}`;
    }
    first = false;
    if (stopped.signal.aborted) break;
    const time = new Date().toLocaleTimeString();
    out.write(`${out.isTTY ? CLEAR_SCREEN : '\n'}ml.status at ${time} (every ${everyMs / 1000} s; Ctrl-C to stop)\n${body}\n`);
    await sleep(everyMs, undefined, { signal: stopped.signal }).catch(() => undefined);
  }
}
