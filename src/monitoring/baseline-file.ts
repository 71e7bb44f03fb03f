import { parse } from 'csv-parse/sync';
import { UsageError } from '../errors.js';
import type { Signature } from '../models/signature.js';
import { summarize, type Summary } from './summary.js';

/**
 * The features of a model's inputs, as ml._model_features names them: one per value of each
 * tensor input, 'X[0]', 'X[1]', … for an [N, k] input, the input's name for an [N] input.
 */
export function modelFeatures(signature: Signature): string[] {
  return signature.inputs.flatMap((input) => {
    if (!input.tensor) return [];
    if (input.shape.length === 1) return [input.name];
    const width = input.shape[1];
    if (typeof width !== 'number') {
      throw new UsageError(`input "${input.name}" has no fixed width (shape ${JSON.stringify(input.shape)}), so a baseline file cannot be matched to it`, {
        hint: 'Set the baseline from the first rows the worker scores instead (leave --baseline out).',
      });
    }
    return Array.from({ length: width }, (_, j) => `${input.name}[${j}]`);
  });
}

/**
 * `pgscore model push --baseline train.csv`: the training data's summaries. The CSV has a header
 * row and one column per feature, in the order of modelFeatures; empty cells are missing values.
 */
export function baselineFromCsv(text: string, file: string, signature: Signature): { rows: number; inputs: Record<string, Summary> } {
  let records: string[][];
  try {
    records = parse(text, { skip_empty_lines: true, trim: true }) as string[][];
  } catch (error) {
    throw new UsageError(`--baseline ${file} is not CSV: ${(error as Error).message}`);
  }
  const features = modelFeatures(signature);
  const [header, ...rows] = records;
  if (!header || rows.length === 0) throw new UsageError(`--baseline ${file} has no rows under its header`);
  if (header.length !== features.length) {
    throw new UsageError(`--baseline ${file} has ${header.length} column(s), but the model takes ${features.length} feature(s): ${features.join(', ')}`, {
      hint: 'Give one column per feature, in that order, under a header row.',
    });
  }
  const inputs = Object.fromEntries(
    features.map((feature, column) => [feature, summarize(rows.map((row) => (row[column] === undefined || row[column] === '' ? null : row[column])))]),
  );
  return { rows: rows.length, inputs };
}
