import { describe, isRetriable, ModelError } from '../errors.js';

/**
 * One failure policy for both transports (README "Operations"). What a failed batch means:
 *
 *  - reconnect: the database (or its connection) or the Kafka broker went away, or any error
 *    whose PgscoreError.retriable says that trying again later can help. Nothing of the batch committed; the
 *    rows stay queued (notify) or their offsets uncommitted (Kafka). Everything waits with a
 *    jittered backoff, since no deployment can progress.
 *  - pause: the deployment's model does not load. Its rows stay queued (the Kafka worker puts
 *    them back on the deployment's queue) and the deployment rests, with a growing delay, until
 *    a promotion or a reload brings a model that loads. Other deployments go on.
 *  - recheck: anything else, typically a schema change the event triggers did not see. The
 *    deployment is re-planned (ml._recheck): it stays active if the mapping still fits, or turns
 *    invalid with the reason, its triggers removed and its queued keys kept. Its rows stay
 *    queued and it rests with a growing delay, so one broken deployment never loops hot or
 *    slows the others.
 *
 * Bad rows are no failures: they become dead letters inside the batch (invariant 3).
 */
export type FailureAction =
  | { readonly kind: 'reconnect'; readonly reason: string }
  | { readonly kind: 'pause'; readonly reason: string }
  | { readonly kind: 'recheck'; readonly reason: string };

export function classifyFailure(error: unknown): FailureAction {
  const reason = describe(error);
  if (isRetriable(error)) return { kind: 'reconnect', reason };
  if (error instanceof ModelError) return { kind: 'pause', reason };
  return { kind: 'recheck', reason };
}

const FIRST_REST_MS = 250;
const MAX_REST_MS = 30_000;

/**
 * Which deployments rest after failures, and until when. The delay doubles with each failure in
 * a row (250 ms up to 30 s, with jitter) and resets on the first batch that succeeds.
 */
export class DeploymentHealth {
  readonly #resting = new Map<number, { until: number; failures: number; reason: string }>();

  constructor(private readonly now: () => number = Date.now) {}

  /** Records a failure; returns how long the deployment rests. */
  failed(id: number, reason: string): number {
    const failures = (this.#resting.get(id)?.failures ?? 0) + 1;
    const delay = Math.min(MAX_REST_MS, FIRST_REST_MS * 2 ** (failures - 1)) * (0.75 + Math.random() / 4);
    this.#resting.set(id, { until: this.now() + delay, failures, reason });
    return delay;
  }

  succeeded(id: number): void {
    this.#resting.delete(id);
  }

  isResting(id: number): boolean {
    const entry = this.#resting.get(id);
    return entry !== undefined && entry.until > this.now();
  }

  /** Failures in a row (0 when healthy): the first of a series is logged, repeats are rate-limited. */
  failures(id: number): number {
    return this.#resting.get(id)?.failures ?? 0;
  }

  /** Forgets deployments that are gone. */
  retain(ids: ReadonlySet<number>): void {
    for (const id of this.#resting.keys()) if (!ids.has(id)) this.#resting.delete(id);
  }
}
