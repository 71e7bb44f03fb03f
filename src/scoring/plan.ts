import { z } from 'zod';

/**
 * A deployment's mapping, resolved against its model by ml._plan (sql/functions/020_plan.sql)
 * and stored in ml._deployments.plan. The worker only ever reads it.
 */
const column = z.object({ column: z.string(), attnum: z.number().int() });
const source = z.union([
  column.extend({ label: z.string(), type: z.string() }),
  /** An SQL expression, and the columns it reads (checked at deploy, see 015_expressions.sql). */
  z.object({ expr: z.string(), columns: z.array(column), label: z.string(), type: z.string() }),
]);

export const inputTypes = ['float32', 'float64', 'int32', 'int64', 'bool', 'string'] as const;
export type InputType = (typeof inputTypes)[number];

const input = z.object({
  name: z.string(),
  type: z.enum(inputTypes),
  rank: z.union([z.literal(1), z.literal(2)]),
  /** Values per row; null for an array column feeding a tensor of unknown width. */
  width: z.number().int().positive().nullable(),
  /** One array column feeds the whole row (instead of one column per value). */
  array: z.boolean(),
  sources: z.array(source).min(1),
});

const output = z.object({
  column: z.string(),
  attnum: z.number().int(),
  output: z.string(),
  /** Which value of each row; null writes the whole row into an array column. */
  index: z.number().int().nonnegative().nullable(),
  type: z.string(),
  sql_type: z.string(),
  array: z.boolean(),
  /** Values per row of the output tensor (1 for [N] and [N, 1]); null when unknown. */
  width: z.number().int().nullable().optional(),
});

const modelVersion = z.object({ model: z.string(), version: z.number().int(), ref: z.string() });

/** The plan layout this worker reads (ml._plan_version()); `pgscore migrate` rebuilds older plans. */
export const PLAN_VERSION = 2;

export const planSchema = z.object({
  version: z.literal(PLAN_VERSION),
  keys: z.array(column.extend({ type: z.string() })).min(1),
  inputs: z.array(input).min(1),
  outputs: z.array(output).min(1),
  /** Where each prediction's model version and time are written; null when turned off. */
  provenance: z.object({ model: column, scored_at: column }).nullable(),
  // The lifecycle part (sql/functions/025_lifecycle_plan.sql); plans from before it have none.
  /** live: triggers queue written rows; batch: only runs queue rows. */
  mode: z.enum(['live', 'batch']).default('live'),
  /** Share of the live model's predictions written to the prediction log. */
  log_sample: z.number().min(0).max(1).default(1),
  /** A split: each row is scored by one of these, chosen by a stable hash of its key. */
  variants: z.array(modelVersion.extend({ weight: z.number().nonnegative() })).nullable().default(null),
  /** Scores every row too, into the prediction log only. */
  shadow: modelVersion.nullable().default(null),
  /** A batch deployment's cron schedule, in timezone. */
  schedule: z.string().nullable().default(null),
  timezone: z.string().default('UTC'),
  /** Whether the worker counts live values against the version's baseline (ml.drift). */
  drift: z.boolean().default(true),
  /** A side table the predictions are appended to, instead of the source rows. */
  target: z.object({ table: z.string(), oid: z.number() }).nullable().default(null),
  /** trigger: statement triggers queue written rows; wal: the worker queues them from the WAL (src/capture/). */
  capture: z.enum(['trigger', 'wal']).default('trigger'),
});

export type Plan = z.infer<typeof planSchema>;
export type PlanInput = Plan['inputs'][number];
export type PlanOutput = Plan['outputs'][number];
export type PlanSource = z.infer<typeof source>;
export type ModelVersion = z.infer<typeof modelVersion>;
