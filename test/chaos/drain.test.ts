/**
 * The chaos drain (invariants 1, 2 and 7 together): 200,000 rows arrive in bulk INSERTs while
 * applications keep updating inputs of random rows; meanwhile the worker is kill -9'd every 2-4 s
 * (aimed at an open batch; sometimes two workers run), the listener's backend is terminated,
 * the model is promoted and Postgres restarts. Then one clean worker drains what is left, and
 * every row is judged:
 *   lost       rows without a prediction once the queue is empty
 *   stale      predictions that are not a fresh scoring of the row's final inputs: by v1 or v2,
 *              by v2 only for rows last changed once every running worker had started after the promote
 *   duplicates writes of a set of inputs (a row version) written before (information: nothing
 *              promises exactly-once scoring of updated rows)
 * v1 is examples/models/typed.onnx, v2 a variant that predicts differently (test/helpers/chaos.ts);
 * both are exact sums, so SQL recomputes them (test/chaos/table.ts).
 *
 * The inserts are spread over three quarters of the chaos window (CHAOS_SECONDS, default 90):
 * on two cores a worker scores the typed model at ~50,000 rows/s, so a backlog inserted at once
 * is gone in ~4 s, before a second kill. Spread out, the kills, the restart and the promote land
 * on work in flight. Prints a one-line JSON summary and writes it to test/chaos/.last-run.json.
 * CHAOS_ROWS sets the number of rows (default 200,000).
 */
import { readFile } from 'node:fs/promises';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrate } from '../../src/db/migrate.js';
import { connectionAs, createWorkerRole } from '../../src/db/roles.js';
import { pushModel } from '../../src/models/registry.js';
import {
  pause, pollUntil, reportSummary, retrying, startActor, typedVariant, WorkerFleet, type Actor, type RetryCounter,
} from '../helpers/chaos.js';
import { startDedicatedServer, type DedicatedServer } from '../helpers/server.js';
import { startInserts, startKiller, startUpdates } from './load.js';
import { createChaosTable, DEPLOYMENT, judge, MODEL, SCORED, TABLE } from './table.js';

const ROWS = Number(process.env.CHAOS_ROWS ?? 200_000);
/** How long the chaos lasts; the rows arrive during the first three quarters of it. */
const CHAOS_MS = Number(process.env.CHAOS_SECONDS ?? 90) * 1000;
const INSERT_CHUNK = 10_000;
const UPDATES = { updaters: 3, rowsPerStatement: 10, pauseMs: 10 };
const KILLS = { everyMs: [2_000, 4_000] as const, aimMs: 1_000 };
const DRAIN_TIMEOUT_MS = 5 * 60_000;
const WORKER_ROLE = 'pgscore_chaos_worker';
const WORKER_PASSWORD = 'chaos';
const SUMMARY = new URL('./.last-run.json', import.meta.url);

describe('chaos: a drain under kill -9, a Postgres restart, a lost listener and a promote', () => {
  let server: DedicatedServer;
  let admin: pg.Pool;
  let fleet: WorkerFleet | undefined;
  const actors: Actor[] = [];

  beforeAll(async () => {
    server = await startDedicatedServer();
    const setup = new pg.Client({ connectionString: server.url('postgres') });
    await setup.connect();
    try {
      await setup.query('CREATE DATABASE pgscore_chaos');
    } finally {
      await setup.end();
    }
    admin = new pg.Pool({ connectionString: server.url('pgscore_chaos'), max: 4 });
    admin.on('error', () => undefined);
    const client = await admin.connect();
    try {
      await migrate(client);
      await createWorkerRole(client, WORKER_ROLE, WORKER_PASSWORD);
    } finally {
      client.release();
    }
    const typed = await readFile(new URL('../../examples/models/typed.onnx', import.meta.url));
    expect((await pushModel(admin, MODEL, typed)).version).toBe(1);
    expect((await pushModel(admin, MODEL, typedVariant(typed))).version).toBe(2);
    await createChaosTable(admin);
  });

  afterAll(async () => {
    await Promise.allSettled(actors.map((a) => a.stop()));
    if (fleet) await fleet.killAll();
    await admin?.end().catch(() => undefined);
    await server?.stop();
  });

  it(`scores all ${ROWS.toLocaleString('en')} rows, none lost, none stale`, async () => {
    const workerUrl = connectionAs(server.url('pgscore_chaos'), WORKER_ROLE, WORKER_PASSWORD);
    const workers = new WorkerFleet(['worker'], { DATABASE_URL: workerUrl, PGSCORE_LOG_LEVEL: 'info' });
    fleet = workers;
    const retries: RetryCounter = { transient: 0 };
    const writers = new pg.Pool({ connectionString: server.url('pgscore_chaos'), max: UPDATES.updaters + 2 });
    writers.on('error', () => undefined);
    const failure = () => actors.find((a) => a.failure)?.failure;
    const at = (fraction: number, what: string) =>
      pollUntil(async () => performance.now() - started >= CHAOS_MS * fraction, what, {
        timeoutMs: CHAOS_MS, intervalMs: 100, failure,
      });

    const started = performance.now();
    const seconds = (at: number | undefined) => (at === undefined ? null : Math.round((at - started) / 100) / 10);
    workers.spawn();
    const killer = startKiller(workers, admin, KILLS);
    const inserts = startInserts(writers, retries, {
      rows: ROWS, chunk: INSERT_CHUNK, everyMs: (0.75 * CHAOS_MS) / Math.ceil(ROWS / INSERT_CHUNK),
    });
    const updates = startUpdates(writers, retries, inserts.upTo, UPDATES);
    let backlogPeak = 0;
    let allScoredAt: number | undefined;
    const monitor = startActor('monitor', async (signal) => {
      await pause(500, signal);
      const { rows } = await admin.query<{ pending: string }>('SELECT pending FROM ml.status WHERE deployment = $1', [DEPLOYMENT])
        .catch(() => ({ rows: [] }));
      backlogPeak = Math.max(backlogPeak, Number(rows[0]?.pending ?? 0));
      if (allScoredAt === undefined && inserts.doneAt() !== undefined) {
        const n = await admin.query<{ n: number }>(SCORED).then((r) => r.rows[0]!.n, () => 0);
        if (n >= ROWS) allScoredAt = performance.now();
      }
    });
    actors.push(killer.actor, inserts.actor, ...updates.actors, monitor);

    // The listener's backend is terminated while a worker listens.
    await at(0.2, 'the listener termination');
    const listenersTerminated = await pollUntil(async () => {
      const { rows } = await admin.query<{ n: number }>(`SELECT count(pg_terminate_backend(pid))::int AS n
        FROM pg_stat_activity WHERE application_name = 'pgscore listener' AND datname = current_database()`);
      return rows[0]!.n;
    }, 'a listener to terminate', { timeoutMs: 30_000, intervalMs: 100, failure });

    await at(0.4, 'the promote');
    await retrying(undefined, retries, () => admin.query('SELECT ml.promote($1, 2)', [MODEL]));
    const promotedAt = performance.now();
    // From then on no running worker can hold v1: each one loaded the deployments after the promote.
    const switchedAt = await pollUntil(async () => {
      if (!workers.live().every((w) => w.spawnedAt > promotedAt)) return false;
      return (await admin.query<{ now: Date }>('SELECT clock_timestamp() AS now')).rows[0]!.now;
    }, 'every running worker to have started after the promote', { timeoutMs: 30_000, intervalMs: 100, failure });

    await at(0.6, 'the Postgres restart');
    await server.restart();

    await at(1, 'the end of the chaos');
    await pollUntil(async () => inserts.upTo() >= ROWS && (await admin.query<{ n: number }>(SCORED)).rows[0]!.n >= ROWS,
      'every row scored once', { timeoutMs: DRAIN_TIMEOUT_MS, intervalMs: 500, failure });
    const chaosEnd = performance.now();
    for (const actor of actors.splice(0)) await actor.stop();
    await workers.killAll();

    // One clean worker drains what the last updates queued, and stops when asked.
    const last = workers.spawn();
    await WorkerFleet.ready(last);
    await pollUntil(async () => {
      const { rows } = await admin.query<{ pending: string }>('SELECT pending FROM ml.status WHERE deployment = $1', [DEPLOYMENT]);
      return Number(rows[0]?.pending) === 0;
    }, 'the queue to empty', { timeoutMs: 120_000, intervalMs: 250 });
    const drained = performance.now();
    await workers.terminateAll();
    await writers.end();

    const verdict = await judge(admin, switchedAt);
    const summary = {
      postgres: server.majorVersion,
      rows: verdict.rows,
      updates: verdict.updates,
      updateStatements: updates.statements(),
      kills: workers.kills,
      killRounds: killer.rounds(),
      killRoundsMidBatch: killer.midBatch(),
      workersStarted: workers.spawned,
      // Exits nobody asked for: a crash of a running worker, or a start refused while Postgres was down.
      workersCrashed: workers.selfExits().filter((w) => WorkerFleet.wasReady(w)).length,
      workersFailedToStart: workers.selfExits().filter((w) => !WorkerFleet.wasReady(w)).length,
      restarts: 1,
      listenersTerminated,
      promotes: 1,
      lost: verdict.lost,
      stale: verdict.stale,
      duplicates: verdict.duplicates,
      writes: verdict.writes,
      scoredByV1: verdict.byV1,
      scoredByV2: verdict.byV2,
      deadLetters: verdict.deadLetters,
      backlogPeak,
      writerRetries: retries.transient,
      lastInsertSeconds: seconds(inserts.doneAt()),
      // Within the monitor's 0.5 s.
      allScoredSeconds: seconds(allScoredAt),
      chaosSeconds: seconds(chaosEnd),
      drainSeconds: seconds(drained),
    };
    await reportSummary(summary, SUMMARY);
    for (const w of workers.selfExits()) {
      const what = WorkerFleet.wasReady(w) ? 'a running worker crashed' : 'a worker did not start';
      console.log(`${what} (${JSON.stringify(w.exit)}):\n${WorkerFleet.tail(w)}`);
    }

    expect(last.exit).toEqual({ code: 0, signal: null });
    // Killed workers are the test's doing; a running worker must survive the Postgres restart,
    // and one started during it waits for the database instead of exiting.
    expect({ crashed: summary.workersCrashed, failedToStart: summary.workersFailedToStart }).toEqual({ crashed: 0, failedToStart: 0 });
    expect(verdict.rows).toBe(ROWS);
    expect({ lost: verdict.lost, stale: verdict.stale, deadLetters: verdict.deadLetters, pending: verdict.pending })
      .toEqual({ lost: 0, stale: 0, deadLetters: 0, pending: 0 });
    // Every committed write-back is in the log, and the worker's own statistics agree.
    expect(verdict.batchScored).toBe(verdict.writes);
    expect(killer.rounds()).toBeGreaterThan(0);

    // The judge itself: one prediction off by one and one missing are seen.
    await admin.query(`UPDATE ${TABLE} SET total = total + 1 WHERE id = 1`);
    await admin.query(`UPDATE ${TABLE} SET total = NULL WHERE id = 2`);
    expect(await judge(admin, switchedAt)).toMatchObject({ lost: 1, stale: 1 });
  });
});
