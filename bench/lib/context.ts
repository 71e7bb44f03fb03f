import type { Logger } from '../../src/log.js';
import type { BenchServer } from './db.js';
import type { ScenarioOutcome } from './result.js';

/** `pid`: the broker's JVM while it runs (scenario 12 reads its CPU time). */
export type KafkaSetup = { ok: true; brokers: string[]; pid: () => number | undefined } | { ok: false; reason: string };

export interface Context {
  readonly quick: boolean;
  readonly server: BenchServer;
  readonly log: Logger;
  /** Figures later scenarios compare against (medians), e.g. `raw.logreg.1000`, `drain.notify.gbm`. */
  readonly shared: Map<string, number>;
  /** Started lazily by the first scenario that needs it. */
  kafka(): Promise<KafkaSetup>;
  progress(message: string): void;
}

export interface Scenario {
  readonly id: string;
  readonly title: string;
  run(ctx: Context, outcome: { metrics: ScenarioOutcome['metrics']; notes: string[] }): Promise<void>;
}

/** quick or full value. */
export function pick<T>(ctx: Context, quick: T, full: T): T {
  return ctx.quick ? quick : full;
}
