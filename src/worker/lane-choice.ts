/**
 * A deployment whose last batch was mostly dead letters (a model failing on every row scores
 * each batch by halves down to single rows) takes batches of at most this many rows, and one
 * lane at a time: its neighbours' rows wait for at most one such batch.
 */
const FAILING_BATCH_SIZE = 16;
/**
 * …and, while a neighbour has live traffic (rows in the last NEIGHBOUR_LIVE_MS), it takes at
 * most this share of one lane's time: after such a batch it rests for the batch's duration times
 * (1 / share − 1). Its rows all become dead letters anyway; the time it leaves goes to the
 * neighbours (the worker's JavaScript thread and the cores are shared). Alone, it runs flat out.
 */
const FAILING_SHARE = 0.1;
const NEIGHBOUR_LIVE_MS = 1_000;

/** What a lane's batch came to (BatchResult's counts). */
export interface LaneOutcome {
  readonly claimed: number;
  readonly dead: number;
  readonly requeued: number;
}

/**
 * Which deployment a free lane takes next, and how big its batch: the loop's fairness between
 * deployments (src/worker/loop.ts). Round robin over those with work: first those with no batch
 * in flight (a neighbour's live rows before another batch of a backlog), healthy ones before
 * failing ones. A second lane on one deployment only when no other has work, and only when its
 * last batch scored every row (not a failing one, nor one not seen yet).
 */
export class LaneChoice {
  /** Batches in flight per deployment. */
  readonly #inFlight = new Map<number, number>();
  /** Deployments whose last batch was mostly dead letters (see FAILING_BATCH_SIZE). */
  readonly #failing = new Set<number>();
  /** Until when a failing deployment rests (see FAILING_SHARE). */
  readonly #coolingUntil = new Map<number, number>();
  /** When a deployment that is not failing last claimed rows (see NEIGHBOUR_LIVE_MS). */
  #healthyRowsAt = -Infinity;
  /** Deployments whose last batch scored every row it claimed: they may take a second lane. */
  readonly #proven = new Set<number>();
  #cursor = 0;

  /** Whether a failing deployment rests now (it stays marked; see FAILING_SHARE). */
  isCooling(id: number, now = performance.now()): boolean {
    return (this.#coolingUntil.get(id) ?? 0) > now;
  }

  /** When the first of these deployments' rest ends (Infinity: none rests). */
  coolingEnds(ids: Iterable<number>, now = performance.now()): number {
    let end = Infinity;
    for (const id of ids) {
      const at = this.#coolingUntil.get(id);
      if (at !== undefined && at > now) end = Math.min(end, at);
    }
    return end;
  }

  /** The next of `pickable` (deployments with work that may run now) for a free lane. */
  pick(pickable: readonly number[]): number | undefined {
    if (pickable.length === 0) return undefined;
    const idle = pickable.filter((id) => (this.#inFlight.get(id) ?? 0) === 0);
    const healthy = idle.filter((id) => !this.#failing.has(id));
    const choice = healthy.length > 0 ? healthy : idle.length > 0 ? idle : pickable.filter((id) => this.#proven.has(id));
    if (choice.length === 0) return undefined;
    this.#cursor = (this.#cursor + 1) % choice.length;
    return choice[this.#cursor];
  }

  /** The batch size of a deployment's next batch. */
  batchSize(id: number, batchSize: number): number | undefined {
    return this.#failing.has(id) ? Math.min(FAILING_BATCH_SIZE, batchSize) : undefined;
  }

  started(id: number): void {
    this.#inFlight.set(id, (this.#inFlight.get(id) ?? 0) + 1);
  }

  finished(id: number): void {
    const left = (this.#inFlight.get(id) ?? 1) - 1;
    if (left > 0) this.#inFlight.set(id, left);
    else this.#inFlight.delete(id);
  }

  /** Learns from a batch that claimed rows, which started at `startedAt`. */
  observe(id: number, outcome: LaneOutcome, startedAt: number): void {
    const now = performance.now();
    if (outcome.dead * 2 > outcome.claimed) {
      this.#failing.add(id);
      if (now - this.#healthyRowsAt < NEIGHBOUR_LIVE_MS) this.#coolingUntil.set(id, now + (now - startedAt) * (1 / FAILING_SHARE - 1));
    } else {
      this.#failing.delete(id);
      this.#coolingUntil.delete(id);
      this.#healthyRowsAt = now;
    }
    if (outcome.dead === 0 && outcome.requeued === 0) this.#proven.add(id);
    else this.#proven.delete(id);
  }

  /** Forgets deployments that are gone. */
  retain(ids: ReadonlySet<number>): void {
    for (const id of [...this.#failing, ...this.#proven, ...this.#coolingUntil.keys()]) {
      if (!ids.has(id)) {
        this.#failing.delete(id);
        this.#proven.delete(id);
        this.#coolingUntil.delete(id);
      }
    }
  }
}
