import type { Logger } from './log.js';

export interface RateLimitOptions {
  /** At most one line per key in this many milliseconds; 10 s by default. */
  readonly intervalMs?: number;
  /** Keys remembered at most; the longest idle are forgotten first. 1,000 by default. */
  readonly maxKeys?: number;
  /** Milliseconds since some epoch; tests pass a fake clock. */
  readonly now?: () => number;
}

interface KeyState {
  /** When the key was last written to the log. */
  loggedAt: number;
  /** When the key was last seen, logged or not. */
  seenAt: number;
  /** Occurrences dropped since the last line. */
  suppressed: number;
}

// A key quiet for this many intervals has stopped repeating; forgetting it costs nothing but
// the count of its last few dropped occurrences.
const IDLE_INTERVALS = 6;

/**
 * Logs an event the first time its key is seen, then at most once per interval per key, with
 * `repeated: n` counting the occurrences dropped since the previous line. A model that fails on
 * every batch thus writes one line every ten seconds instead of one per batch.
 *
 * Dropped occurrences are reported by the next line of the same key; a key that goes quiet
 * within an interval takes its last count with it.
 */
export class RateLimitedLog {
  readonly #logger: Logger;
  readonly #intervalMs: number;
  readonly #maxKeys: number;
  readonly #now: () => number;
  // Kept in order of last sighting (a key is re-inserted when seen), so the idle are in front.
  readonly #keys = new Map<string, KeyState>();

  constructor(logger: Logger, options: RateLimitOptions = {}) {
    this.#logger = logger;
    this.#intervalMs = options.intervalMs ?? 10_000;
    this.#maxKeys = Math.max(1, options.maxKeys ?? 1_000);
    this.#now = options.now ?? Date.now;
  }

  /** Returns whether the line was written. */
  warn(key: string, obj: Readonly<Record<string, unknown>>, msg: string): boolean {
    return this.#log('warn', key, obj, msg);
  }

  /** Returns whether the line was written. */
  error(key: string, obj: Readonly<Record<string, unknown>>, msg: string): boolean {
    return this.#log('error', key, obj, msg);
  }

  /** How many keys are remembered (for tests of the memory bound). */
  get size(): number {
    return this.#keys.size;
  }

  #log(level: 'warn' | 'error', key: string, obj: Readonly<Record<string, unknown>>, msg: string): boolean {
    const now = this.#now();
    const state = this.#keys.get(key);
    this.#keys.delete(key);
    if (state && now - state.loggedAt < this.#intervalMs) {
      state.seenAt = now;
      state.suppressed += 1;
      this.#keys.set(key, state);
      return false;
    }
    const repeated = state?.suppressed ?? 0;
    this.#logger[level](repeated > 0 ? { ...obj, repeated } : obj, msg);
    this.#keys.set(key, { loggedAt: now, seenAt: now, suppressed: 0 });
    this.#forgetIdle(now);
    return true;
  }

  #forgetIdle(now: number): void {
    const idleBefore = now - IDLE_INTERVALS * this.#intervalMs;
    for (const [key, state] of this.#keys) {
      if (state.seenAt > idleBefore && this.#keys.size <= this.#maxKeys) break;
      this.#keys.delete(key);
    }
  }
}
