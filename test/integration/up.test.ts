import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { exited, startPgscore } from '../helpers/cli.js';
import { waitFor } from '../helpers/db.js';

describe('pgscore up (npm start)', () => {
  const dirs: string[] = [];
  afterAll(async () => {
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  });

  const start = async (dataDir: string, port: number) => {
    const up = startPgscore(['up', '--data-dir', dataDir, '--port', String(port)], { PGSCORE_LOG_LEVEL: 'warn' });
    const started = performance.now();
    const url = await waitFor(async () => /pgscore ready: (\S+)/.exec(up.output())?.[1] ?? (up.exitCode !== null ? 'exited' : null), 'ready line', 90_000);
    expect(url, up.output()).not.toBe('exited');
    return { up, url, readyMs: performance.now() - started };
  };

  it('starts Postgres with the example deployment, scores an INSERT, and stops on SIGINT keeping the data', async () => {
    const root = await mkdtemp(path.join(tmpdir(), 'pgscore-up-'));
    await chmod(root, 0o755);
    dirs.push(root);
    const dataDir = path.join(root, 'data');
    const port = 40000 + Math.floor(Math.random() * 10000);

    const first = await start(dataDir, port);
    console.log(`pgscore up: ready in ${first.readyMs.toFixed(0)} ms on a fresh data directory`);
    expect(first.up.output()).toContain('INSERT INTO iris');
    // The ready message points to the status page (on 9464 unless that port is taken).
    const page = /status page: (\S+)/.exec(first.up.output())?.[1];
    if (page) expect((await fetch(page)).status).toBe(200);
    else expect(first.up.output()).toContain('no status page: cannot serve metrics on 127.0.0.1:9464: the port is in use');
    const client = new pg.Client({ connectionString: first.url });
    await client.connect();
    try {
      const { rows } = await client.query<{ id: string }>(
        'INSERT INTO iris (sepal_length, sepal_width, petal_length, petal_width) VALUES (5.1, 3.5, 1.4, 0.2) RETURNING id');
      const id = rows[0]!.id;
      const species = await waitFor(async () => (await client.query<{ species: string | null }>('SELECT species FROM iris WHERE id = $1', [id])).rows[0]?.species, 'prediction');
      expect(species).toBe('setosa');
    } finally {
      await client.end();
    }
    first.up.kill('SIGINT');
    await exited(first.up);

    // A second start finds the data, the model and the deployment already there.
    const second = await start(dataDir, port);
    console.log(`pgscore up: ready in ${second.readyMs.toFixed(0)} ms on an existing data directory`);
    const again = new pg.Client({ connectionString: second.url });
    await again.connect();
    try {
      const { rows } = await again.query<{ n: string }>(`SELECT count(*) AS n FROM iris WHERE species = 'setosa'`);
      expect(rows[0]!.n).toBe('1');
      const models = await again.query(`SELECT name, version FROM ml.models`);
      expect(models.rows).toEqual([{ name: 'iris', version: 1 }]);
    } finally {
      await again.end();
    }
    second.up.kill('SIGINT');
    await exited(second.up);
  });
});
