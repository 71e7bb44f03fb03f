import { readFile, chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { exited, startPgscore } from '../helpers/cli.js';
import { waitFor } from '../helpers/db.js';
import { freePort } from '../helpers/ports.js';

const FATAL = fileURLToPath(new URL('../fixtures/fatal-on-sigusr2.mjs', import.meta.url));

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * An error nothing catches (a model read as one string crashed pg's socket handler this way)
 * ended `pgscore up` at once and left its embedded Postgres running, with no one to stop it.
 * up.test.ts covers the other ways up ends (signals, kill -9, a failed start).
 */
describe('pgscore up on a fatal error', () => {
  const dirs: string[] = [];
  const postmasters: number[] = [];
  afterAll(async () => {
    // Whatever happened, no server of this test outlives it.
    for (const pid of postmasters) if (alive(pid)) process.kill(pid, 'SIGQUIT');
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  });

  it('exits with 1 and its Postgres stops', async () => {
    const root = await mkdtemp(path.join(tmpdir(), 'pgscore-up-fatal-'));
    await chmod(root, 0o755);
    dirs.push(root);
    const dataDir = path.join(root, 'data');
    const up = startPgscore(['up', '--data-dir', dataDir, '--port', String(await freePort())], {
      PGSCORE_LOG_LEVEL: 'warn',
      PGSCORE_METRICS_PORT: 'off',
      NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --import ${FATAL}`.trim(),
    });
    try {
      const ready = await waitFor(async () => /pgscore ready/.test(up.output()) || (up.exitCode !== null ? 'exited' : null), 'ready line', 90_000);
      expect(ready, up.output()).toBe(true);
      const postmaster = Number((await readFile(path.join(dataDir, 'postmaster.pid'), 'utf8')).split('\n')[0]);
      postmasters.push(postmaster);
      expect(alive(postmaster)).toBe(true);

      up.kill('SIGUSR2');
      expect(await exited(up)).toBe(1);
      expect(up.output()).toContain('injected fatal error');
      // Postgres does not outlive it (its watchdog stops it).
      await waitFor(async () => !alive(postmaster), 'Postgres stopped', 30_000);
      await waitFor(async () => readFile(path.join(dataDir, 'postmaster.pid')).then(() => false, () => true), 'postmaster.pid removed', 30_000);
    } finally {
      if (up.exitCode === null) up.kill('SIGKILL');
    }
  });
});
