import type { ChildProcess } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { isConnectionError } from '../../src/errors.js';
import { startPgscore } from './cli.js';

/**
 * Tools of the chaos suite (test/chaos): a fleet of `pgscore worker` processes to kill -9,
 * actors that loop until stopped, writers that ride out a Postgres restart, and a second
 * typed model that predicts differently from the first.
 */

/**
 * examples/models/typed.onnx computes total = f32[0] + f32[1] + f64 + i32 + i64 + flag. The
 * variant's Sum node reads the int64 input where the original reads the int32 one:
 * total = f32[0] + f32[1] + f64 + 2 * i64 + flag. Same inputs, outputs and signature (the
 * int32 input is still read, its Cast just goes unused), different predictions, and both stay
 * exact sums that SQL can recompute. The names have the same length, so the patch keeps every
 * protobuf length prefix valid.
 */
export function typedVariant(typed: Uint8Array): Buffer {
  const sumInputs = Buffer.from('\n\x04i32d\n\x04i64d', 'latin1');
  const at = Buffer.from(typed).indexOf(sumInputs);
  if (at < 0 || Buffer.from(typed).indexOf(sumInputs, at + 1) >= 0) {
    throw new Error('typed.onnx changed: its Sum node no longer reads "i32d" then "i64d" exactly once');
  }
  const variant = Buffer.from(typed);
  Buffer.from('\n\x04i64d\n\x04i64d', 'latin1').copy(variant, at);
  return variant;
}

/** Errors a client of a restarting server sees; the statement is tried again. */
export function isTransient(error: unknown): boolean {
  return isConnectionError(error) || /the database system is (starting up|shutting down|in recovery mode)/i.test(String(error));
}

export interface RetryCounter {
  transient: number;
}

/** Runs a statement until it gets through, waiting out a restarting server; other errors throw. */
export async function retrying<T>(signal: AbortSignal | undefined, counter: RetryCounter, run: () => Promise<T>): Promise<T> {
  for (;;) {
    try {
      return await run();
    } catch (error) {
      if (!isTransient(error) || signal?.aborted) throw error;
      counter.transient += 1;
      await pause(100 + Math.random() * 200, signal);
    }
  }
}

/** Sleeps, cut short (without an error) when signal aborts. */
export async function pause(ms: number, signal?: AbortSignal): Promise<void> {
  await sleep(ms, undefined, { signal }).catch(() => undefined);
}

export interface Actor {
  /** Stops the loop after its current step; throws what made the loop fail, if anything did. */
  stop(): Promise<void>;
  readonly failure: unknown;
}

/** Runs step over and over until stopped; the first error ends the loop and is kept for stop(). */
export function startActor(name: string, step: (signal: AbortSignal) => Promise<void>): Actor {
  const controller = new AbortController();
  let failure: unknown;
  const loop = (async () => {
    while (!controller.signal.aborted) {
      try {
        await step(controller.signal);
      } catch (error) {
        if (!controller.signal.aborted) failure = new Error(`chaos actor "${name}" failed`, { cause: error });
        return;
      }
    }
  })();
  return {
    get failure() {
      return failure;
    },
    async stop() {
      controller.abort();
      await loop;
      if (failure) throw failure;
    },
  };
}

export interface FleetWorker {
  readonly child: ChildProcess & { output(): string };
  readonly spawnedAt: number;
  /** Set once the process is gone: its exit code, or the signal that ended it. */
  exit?: { code: number | null; signal: NodeJS.Signals | null };
  killed: boolean;
}

/** Long-running `pgscore worker` processes, killed with SIGKILL and replaced. */
export class WorkerFleet {
  readonly #args: readonly string[];
  readonly #env: Record<string, string>;
  readonly #workers: FleetWorker[] = [];
  #kills = 0;

  constructor(args: readonly string[], env: Record<string, string>) {
    this.#args = args;
    this.#env = env;
    // A failed run must not leave workers behind when vitest's worker exits.
    process.once('exit', () => {
      for (const w of this.live()) w.child.kill('SIGKILL');
    });
  }

  spawn(): FleetWorker {
    const worker: FleetWorker = { child: startPgscore(this.#args, this.#env), spawnedAt: performance.now(), killed: false };
    worker.child.once('exit', (code, signal) => (worker.exit = { code, signal }));
    this.#workers.push(worker);
    return worker;
  }

  live(): FleetWorker[] {
    return this.#workers.filter((w) => !w.exit);
  }

  /** kill -9 every live worker and waits until they are gone; returns how many were killed. */
  async killAll(): Promise<number> {
    const live = this.live();
    await Promise.all(live.map((w) => this.#kill(w, 'SIGKILL')));
    this.#kills += live.length;
    return live.length;
  }

  /** Asks every live worker to stop (SIGTERM) and returns their exit codes. */
  async terminateAll(): Promise<(number | null)[]> {
    return Promise.all(this.live().map(async (w) => (await this.#kill(w, 'SIGTERM')).code));
  }

  get kills(): number {
    return this.#kills;
  }

  get spawned(): number {
    return this.#workers.length;
  }

  /** Workers that ended without being killed or stopped by the fleet. */
  selfExits(): FleetWorker[] {
    return this.#workers.filter((w) => w.exit && !w.killed);
  }

  /** True once the worker printed "worker ready" (it had connected, loaded its deployments and listened). */
  static wasReady(worker: FleetWorker): boolean {
    return worker.child.output().includes('"msg":"worker ready"');
  }

  /** Waits for the worker's "worker ready" line (before it, SIGTERM ends the process without a clean stop). */
  static async ready(worker: FleetWorker, timeoutMs = 60_000): Promise<void> {
    await pollUntil(async () => {
      if (worker.exit) throw new Error(`worker exited before it was ready (${JSON.stringify(worker.exit)}):\n${WorkerFleet.tail(worker)}`);
      return WorkerFleet.wasReady(worker);
    }, 'the worker to be ready', { timeoutMs, intervalMs: 50 });
  }

  /** The last lines a worker printed, for failure reports. */
  static tail(worker: FleetWorker, lines = 40): string {
    return worker.child.output().trim().split('\n').slice(-lines).join('\n');
  }

  async #kill(worker: FleetWorker, signal: NodeJS.Signals): Promise<NonNullable<FleetWorker['exit']>> {
    worker.killed = true;
    const gone = new Promise<NonNullable<FleetWorker['exit']>>((resolve) => {
      if (worker.exit) resolve(worker.exit);
      else worker.child.once('exit', (code, sig) => resolve({ code, signal: sig }));
    });
    worker.child.kill(signal);
    return gone;
  }
}

/** Polls check every intervalMs until it returns a truthy value; fails with the last value seen. */
export async function pollUntil<T>(
  check: () => Promise<T | false | null | undefined>,
  what: string,
  options: { timeoutMs: number; intervalMs?: number; failure?: () => unknown },
): Promise<T> {
  const deadline = Date.now() + options.timeoutMs;
  let last: T | false | null | undefined;
  for (;;) {
    // An actor that failed ends the wait at once, with its error.
    const failure = options.failure?.();
    if (failure) throw failure;
    try {
      last = await check();
      if (last) return last;
    } catch (error) {
      if (!isTransient(error)) throw error;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${options.timeoutMs} ms waiting for ${what} (last: ${JSON.stringify(last)})`);
    }
    await sleep(options.intervalMs ?? 250);
  }
}

/** Prints the summary as one JSON line and keeps it in file (the README's figures come from it). */
export async function reportSummary(summary: Record<string, unknown>, file: URL): Promise<void> {
  const line = JSON.stringify(summary);
  console.log(line);
  await writeFile(file, `${line}\n`);
}
