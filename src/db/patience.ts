import { setTimeout as sleep } from 'node:timers/promises';
import { describe, isConnectionError } from '../errors.js';
import type { Logger } from '../log.js';

/** How long a starting process waits for a database that is down, starting or shutting down. */
const STARTUP_PATIENCE_MS = 60_000;

/**
 * A start's steps, each tried again while the database cannot be reached (a restart, a
 * container that starts after the worker), all within one minute from the first step; the
 * running loop rides out later outages. Each step must be safe to run twice.
 */
export function startupPatience(log: Logger | undefined, patienceMs = STARTUP_PATIENCE_MS) {
  const deadline = Date.now() + patienceMs;
  return async function patiently<T>(step: () => Promise<T>): Promise<T> {
    for (let delay = 250; ; delay = Math.min(5_000, delay * 2)) {
      try {
        return await step();
      } catch (error) {
        if (!isConnectionError(error) || Date.now() + delay > deadline) throw error;
        log?.warn({ err: error, retryInMs: delay }, `database not reachable yet: ${describe(error)}`);
        await sleep(delay);
      }
    }
  };
}

export type Patiently = ReturnType<typeof startupPatience>;
