import type pg from 'pg';
import { pause, pollUntil, retrying, startActor, type Actor, type RetryCounter, type WorkerFleet } from '../helpers/chaos.js';
import { INSERT_ROWS, OPEN_BATCHES, UPDATE_ROWS } from './table.js';

/** The chaos actors: what applications write, and the hand that kills workers. */

export interface Inserts {
  readonly actor: Actor;
  /** Rows 1..upTo are committed. */
  upTo(): number;
  /** When the last INSERT committed (performance.now()), once it has. */
  doneAt(): number | undefined;
}

/** Bulk INSERTs of `chunk` rows, one every `everyMs`, until `rows` are in. */
export function startInserts(writers: pg.Pool, counter: RetryCounter, plan: { rows: number; chunk: number; everyMs: number }): Inserts {
  let upTo = 0;
  let doneAt: number | undefined;
  const actor = startActor('inserts', async (signal) => {
    if (upTo >= plan.rows) {
      await new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve()));
      return;
    }
    const due = performance.now() + plan.everyMs;
    const to = Math.min(plan.rows, upTo + plan.chunk);
    await retrying(signal, counter, () => writers.query(INSERT_ROWS, [upTo + 1, to]));
    upTo = to;
    if (upTo >= plan.rows) doneAt = performance.now();
    else await pause(due - performance.now(), signal);
  });
  return { actor, upTo: () => upTo, doneAt: () => doneAt };
}

export interface Updates {
  readonly actors: Actor[];
  /** UPDATE statements acknowledged (rows updated are counted in the table, by version). */
  statements(): number;
}

/** `updaters` connections, each updating `rowsPerStatement` random committed rows, then pausing `pauseMs`. */
export function startUpdates(
  writers: pg.Pool,
  counter: RetryCounter,
  committedUpTo: () => number,
  plan: { updaters: number; rowsPerStatement: number; pauseMs: number },
): Updates {
  let statements = 0;
  const actors = Array.from({ length: plan.updaters }, (_, u) =>
    startActor(`updater ${u + 1}`, async (signal) => {
      await pause(plan.pauseMs, signal);
      const upTo = committedUpTo();
      if (upTo === 0 || signal.aborted) return;
      const ids = new Set(Array.from({ length: plan.rowsPerStatement }, () => 1 + Math.floor(Math.random() * upTo)));
      await retrying(signal, counter, () => writers.query(UPDATE_ROWS, [[...ids].sort((x, y) => x - y)]));
      statements += 1;
    }),
  );
  return { actors, statements: () => statements };
}

export interface Killer {
  readonly actor: Actor;
  /** Kill rounds whose victims had a batch open (rows claimed, not yet committed). */
  midBatch(): number;
  rounds(): number;
}

/**
 * Every `everyMs` (a random delay in the range): waits up to `aimMs` for a worker to be inside a
 * batch, kill -9s every running worker, and starts one again, or two (a third of the time).
 */
export function startKiller(
  fleet: WorkerFleet,
  db: pg.Pool,
  plan: { everyMs: readonly [number, number]; aimMs: number },
): Killer {
  let rounds = 0;
  let midBatch = 0;
  const actor = startActor('killer', async (signal) => {
    await pause(plan.everyMs[0] + Math.random() * (plan.everyMs[1] - plan.everyMs[0]), signal);
    if (signal.aborted) return;
    const inBatch = await pollUntil(
      async () => (await db.query<{ n: number }>(OPEN_BATCHES)).rows[0]!.n > 0,
      'a worker inside a batch',
      { timeoutMs: plan.aimMs, intervalMs: 5 },
    ).catch(() => false);
    await fleet.killAll();
    rounds += 1;
    if (inBatch) midBatch += 1;
    fleet.spawn();
    if (Math.random() < 1 / 3) fleet.spawn();
  });
  return { actor, midBatch: () => midBatch, rounds: () => rounds };
}
