import { z } from 'zod';

/**
 * A deployment's mapping, resolved against its model by ml._plan (sql/functions/020_plan.sql)
 * and stored in ml._deployments.plan. The worker only ever reads it.
 */
const source = z.union([
  z.object({ column: z.string(), label: z.string(), type: z.string() }),
  z.object({ expr: z.string(), label: z.string(), type: z.string() }),
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
  output: z.string(),
  /** Which value of each row; null writes the whole row into an array column. */
  index: z.number().int().nonnegative().nullable(),
  type: z.string(),
  sql_type: z.string(),
  array: z.boolean(),
});

export const planSchema = z.object({
  keys: z.array(z.object({ column: z.string(), type: z.string() })).min(1),
  inputs: z.array(input).min(1),
  outputs: z.array(output).min(1),
});

export type Plan = z.infer<typeof planSchema>;
export type PlanInput = Plan['inputs'][number];
export type PlanOutput = Plan['outputs'][number];
export type PlanSource = z.infer<typeof source>;
