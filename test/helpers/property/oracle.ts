import type { TableSpec } from './spec.js';

/**
 * A fresh scoring of a row, in TypeScript: what "sums" v1 (typed.onnx) and v2 predict from the
 * row's current values, or why the row cannot be scored (then it must be a dead letter). The
 * expressions of the deployment (`ctxt::float8`, `c / z`, `num / den`) are evaluated the way
 * Postgres does, including the errors they raise.
 */

/** A row as read back: every column as Postgres prints it (NULL as null). */
export type RowText = Readonly<Record<'a' | 'b' | 'c' | 'ctxt' | 'z' | 'd' | 'num' | 'den' | 'e' | 'ok' | 'tag' | 'g', string | null>>;

export type Scoring = { ok: true; v1: number; v2: number; scale: number } | { ok: false; why: string };

class Unscorable extends Error {}

function need(value: string | null, what: string): string {
  if (value === null) throw new Unscorable(`${what} is NULL`);
  return value;
}

function finite(x: number, what: string): number {
  if (!Number.isFinite(x)) throw new Unscorable(`${what} is ${x}`);
  return x;
}

/** float8 input: what `text::float8` accepts (the values spec.ts generates and a little more). */
export function parseFloat8(text: string): number {
  const t = text.trim();
  if (/^[-+]?nan$/i.test(t)) return NaN;
  if (/^[-+]?(inf|infinity)$/i.test(t)) return t.startsWith('-') ? -Infinity : Infinity;
  if (!/^[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?$/i.test(t)) throw new Unscorable(`invalid input syntax for type double precision: "${text}"`);
  const x = Number(t);
  if (!Number.isFinite(x)) throw new Unscorable(`"${t}" is out of range for type double precision`);
  return x;
}

function f64(spec: TableSpec, row: RowText): number {
  switch (spec.f64) {
    case 'column':
      return finite(Number(need(row.c, 'c')), 'c');
    case 'generated':
      return finite(Number(need(row.g, 'g')), 'g');
    case 'cast':
      return finite(parseFloat8(need(row.ctxt, 'ctxt')), 'ctxt::float8');
    case 'division': {
      const c = Number(need(row.c, 'c'));
      const z = Number(need(row.z, 'z'));
      if (z === 0) throw new Unscorable('division by zero (c / z)');
      const q = c / z;
      if (!Number.isFinite(q) && Number.isFinite(c)) throw new Unscorable('value out of range: overflow (c / z)');
      return finite(q, 'c / z');
    }
  }
}

function i32(spec: TableSpec, row: RowText): number {
  if (spec.i32 === 'division') {
    const num = Number(need(row.num, 'num'));
    const den = Number(need(row.den, 'den'));
    if (den === 0) throw new Unscorable('division by zero (num / den)');
    return Math.trunc(num / den);
  }
  return Number(need(row.d, 'd'));
}

export function score(spec: TableSpec, row: RowText): Scoring {
  try {
    const a = finite(Math.fround(Number(need(row.a, 'a'))), 'a');
    const b = finite(Math.fround(Number(need(row.b, 'b'))), 'b');
    const x64 = f64(spec, row);
    const x32 = i32(spec, row);
    const e = Number(BigInt(need(row.e, 'e')));
    const flag = need(row.ok, 'ok') === 'true' ? 1 : 0;
    need(row.tag, 'tag');
    const f32 = a + b;
    return {
      ok: true,
      v1: f32 + x64 + x32 + e + flag,
      v2: f32 + x64 + 2 * e + flag,
      scale: Math.abs(a) + Math.abs(b) + Math.abs(x64) + Math.abs(x32) + 2 * Math.abs(e) + 1,
    };
  } catch (error) {
    if (error instanceof Unscorable) return { ok: false, why: error.message };
    throw error;
  }
}

/** The prediction a version gives, within the rounding of a different summation order. */
export function matches(s: Scoring, version: 1 | 2, prediction: number): boolean {
  if (!s.ok) return false;
  const expected = version === 1 ? s.v1 : s.v2;
  return Math.abs(prediction - expected) <= 1e-12 * s.scale;
}
