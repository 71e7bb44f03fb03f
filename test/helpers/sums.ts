import { pushModel } from '../../src/models/registry.js';
import { typedVariant } from './chaos.js';
import { modelBytes, type TestDatabase } from './db.js';

/**
 * Two versions of one model that predict differently, and exactly: "sums" version 1 is
 * examples/models/typed.onnx, version 2 its variant (see typedVariant). SQL recomputes what each
 * version predicts for a row of a sums table.
 */
export const SUMS_INPUTS = '{"f32": ["a", "b"], "f64": "c", "i32": "d", "i64": "e", "flag": "ok", "tag": "tag"}';
export const SUMS_OUTPUTS = '{"total": "total"}';
/** v1 = a + b + c + d + e + ok, v2 = a + b + c + 2e + ok (never equal: e > d). */
export const V1 = 'a + b + c + d + e + ok::int';
export const V2 = 'a + b + c + 2 * e + ok::int';

export async function registerSums(db: TestDatabase): Promise<void> {
  const typed = await modelBytes('typed.onnx');
  await pushModel(db.pool, 'sums', typed);
  await pushModel(db.pool, 'sums', typedVariant(typed));
}

export async function createSumsTable(db: TestDatabase, name: string): Promise<void> {
  await db.sql(`CREATE TABLE ${name} (id int PRIMARY KEY, a real, b real, c float8, d int, e bigint, ok bool, tag text)`);
}

/** Rows from..to of a sums table, in one statement. */
export async function insertSums(db: TestDatabase, name: string, from: number, to: number): Promise<void> {
  await db.sql(`INSERT INTO ${name} SELECT g, 1, 2, 3, g % 100, 1000 + g, g % 2 = 0, 't' FROM generate_series(${from}, ${to}) g`);
}
