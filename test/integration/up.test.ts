import { spawn } from 'node:child_process';
import { access, chmod, mkdtemp, rm } from 'node:fs/promises';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { exited, signalGroup, startPgscore, stopStrayProcesses, type RunningPgscore } from '../helpers/cli.js';
import { waitFor } from '../helpers/db.js';
import { freePort, onFreePort } from '../helpers/ports.js';

const BIN = fileURLToPath(new URL('../../bin/pgscore.js', import.meta.url));

/** What `pgscore up` prints before it waits for Ctrl-C (its last line). */
const BANNER_END = /^Ctrl-C stops pgscore and its Postgres.*$/m;

describe('pgscore up (npm start)', () => {
  const dirs: string[] = [];
  // A test that fails half-way leaves no pgscore and no Postgres behind.
  afterEach(async () => {
    await stopStrayProcesses();
  });
  afterAll(async () => {
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  });

  const dataDir = async () => {
    const root = await mkdtemp(path.join(tmpdir(), 'pgscore-up-'));
    await chmod(root, 0o755);
    dirs.push(root);
    return path.join(root, 'data');
  };

  /** Starts `pgscore up` on a free Postgres port; env PGSCORE_METRICS_PORT as given (unset: the default 9464). */
  const start = (data: string, env: Record<string, string> = {}) =>
    onFreePort(async (port) => {
      const up = startPgscore(['up', '--data-dir', data, '--port', String(port)], env);
      const started = performance.now();
      const url = await waitFor(async () => /^pgscore ready: (\S+)$/m.exec(up.output())?.[1] ?? (up.exitCode !== null ? 'exited' : null), 'ready line', 90_000);
      if (url === 'exited') throw new Error(up.output());
      return { up, url, port, readyMs: performance.now() - started };
    });

  /** Ctrl-C in a terminal: SIGINT to the job's process group. */
  const ctrlC = async (up: RunningPgscore) => {
    signalGroup(up, 'SIGINT');
    return exited(up);
  };

  // The tests after the first share one cluster: initdb is the slow part of a start.
  let shared: Promise<string> | undefined;
  const sharedDataDir = () => (shared ??= dataDir());

  const postgresRuns = (data: string) => access(path.join(data, 'postmaster.pid')).then(() => true, () => false);

  it('starts Postgres with the example deployment, scores an INSERT, and stops quietly on Ctrl-C keeping the data', async () => {
    const data = await dataDir();
    const metricsPort = await freePort();
    const first = await start(data, { PGSCORE_METRICS_PORT: String(metricsPort) });
    console.log(`pgscore up: ready in ${first.readyMs.toFixed(0)} ms on a fresh data directory`);
    expect(first.up.output()).toContain('INSERT INTO iris');
    expect(first.up.output()).toContain(`status page: http://127.0.0.1:${metricsPort}/\n`);
    expect((await fetch(`http://127.0.0.1:${metricsPort}/`)).status).toBe(200);
    const client = new pg.Client({ connectionString: first.url });
    await client.connect();
    try {
      const { rows } = await client.query<{ id: string }>(
        'INSERT INTO iris (sepal_length, sepal_width, petal_length, petal_width) VALUES (5.1, 3.5, 1.4, 0.2) RETURNING id');
      const id = rows[0]!.id;
      const species = await waitFor(async () => (await client.query<{ species: string | null }>('SELECT species FROM iris WHERE id = $1', [id])).rows[0]?.species, 'prediction');
      expect(species).toBe('setosa');
      // Ctrl-C while the worker is busy: it finishes its batches and closes its pools before
      // Postgres stops (the other way round printed ~450 warnings with pg clients and their SQL).
      await client.query(`INSERT INTO iris (sepal_length, sepal_width, petal_length, petal_width)
                          SELECT 4 + g % 4, 3, 1 + g % 5, 0.2 FROM generate_series(1, 20000) g`);
    } finally {
      await client.end();
    }
    expect(await ctrlC(first.up)).toBe(0);
    expect(await postgresRuns(data)).toBe(false);
    const afterBanner = first.up.output().split(BANNER_END)[1]!.trim();
    console.log(`pgscore up: ${afterBanner.split('\n').length} lines after the banner, Ctrl-C included:\n${afterBanner}`);
    expect(afterBanner.split('\n').length, afterBanner).toBeLessThan(15);
    expect(afterBanner).not.toMatch(/Client|_prepared|"stack"|SELECT|INSERT|UPDATE|"level":[56]0/);

    // A second start finds the data, the model and the deployment already there. The default
    // status page port is taken (by another pgscore, or here by the test): it says so and goes on.
    const holder = await holdPort(9464);
    try {
      const second = await start(data);
      console.log(`pgscore up: ready in ${second.readyMs.toFixed(0)} ms on an existing data directory`);
      expect(second.up.output()).toContain('no status page: cannot serve metrics on 127.0.0.1:9464: the port is in use');
      expect(second.up.output()).not.toMatch(/^status page:/m);
      const again = new pg.Client({ connectionString: second.url });
      await again.connect();
      try {
        const { rows } = await again.query<{ n: string }>(`SELECT count(*) AS n FROM iris WHERE species = 'setosa'`);
        expect(Number(rows[0]!.n)).toBeGreaterThanOrEqual(1);
        const models = await again.query(`SELECT name, version FROM ml.models`);
        expect(models.rows).toEqual([{ name: 'iris', version: 1 }]);
      } finally {
        await again.end();
      }
      expect(await ctrlC(second.up)).toBe(0);
    } finally {
      holder?.close();
    }
  });

  it('takes its Postgres down with it when killed with SIGKILL', async () => {
    const data = await sharedDataDir();
    const { up } = await start(data, { PGSCORE_METRICS_PORT: 'off' });
    expect(await postgresRuns(data)).toBe(true);
    signalGroup(up, 'SIGKILL');
    await exited(up);
    await waitFor(async () => !(await postgresRuns(data)), 'Postgres stopped', 30_000);
  });

  it('stops with its Postgres when the test runner that started it dies', async () => {
    const data = await sharedDataDir();
    const port = await freePort();
    // A stand-in for a vitest worker: starts pgscore up the way test/helpers/cli.ts does, then is killed.
    const runner = spawn(process.execPath, ['--input-type=module', '-e', `
      import { spawn } from 'node:child_process';
      const up = spawn(process.execPath, ${JSON.stringify([BIN, 'up', '--data-dir', data, '--port', String(port)])},
        { env: { ...process.env, PGSCORE_METRICS_PORT: 'off' }, detached: true, stdio: ['ignore', 'pipe', 'inherit', 'ipc'] });
      up.stdout.on('data', (chunk) => { if (String(chunk).includes('pgscore ready')) console.log('pid ' + up.pid); });
    `], { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    runner.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    runner.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    try {
      const pid = Number(await waitFor(async () => /^pid (\d+)$/m.exec(output)?.[1] ?? (runner.exitCode !== null ? 'exited' : null), 'pgscore up ready', 90_000));
      expect(pid, output).not.toBeNaN();
      runner.kill('SIGKILL');
      await waitFor(async () => !alive(pid) && !(await postgresRuns(data)), 'pgscore up and its Postgres gone', 30_000);
    } finally {
      runner.kill('SIGKILL');
    }
  });

  it('stops its Postgres when it fails after starting it', async () => {
    const data = await sharedDataDir();
    const taken = await holdPort(await freePort());
    try {
      const port = (taken!.address() as AddressInfo).port;
      // An explicit metrics port is required, unlike the default: taken, `up` fails after Postgres is up.
      const up = startPgscore(['up', '--data-dir', data, '--port', String(await freePort())], { PGSCORE_METRICS_PORT: String(port) });
      expect(await exited(up), up.output()).toBe(2);
      expect(up.output()).toContain(`pgscore: cannot serve metrics on 127.0.0.1:${port}: the port is in use`);
      expect(await postgresRuns(data)).toBe(false);
    } finally {
      taken?.close();
    }
  });

  it('stops with its Postgres when SIGTERM or SIGHUP ask it to', async () => {
    const data = await sharedDataDir();
    for (const signal of ['SIGTERM', 'SIGHUP'] as const) {
      const { up } = await start(data, { PGSCORE_METRICS_PORT: 'off' });
      signalGroup(up, signal);
      expect(await exited(up)).toBe(0);
      expect(await postgresRuns(data)).toBe(false);
    }
  });
});

/**
 * Holds a port so that a test sees it taken. When another process holds it already, that one
 * does the job: undefined.
 */
async function holdPort(port: number): Promise<Server | undefined> {
  const server = createServer();
  return new Promise((resolve, reject) => {
    server.once('error', (error: NodeJS.ErrnoException) => (error.code === 'EADDRINUSE' ? resolve(undefined) : reject(error)));
    server.listen(port, '127.0.0.1', () => resolve(server));
  });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
