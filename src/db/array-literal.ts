/**
 * A Postgres array literal, sent as text: a write-back parameter's values, or one row of a
 * prediction written whole into an array column. node-postgres builds the same from a JS array,
 * but with two regular-expression replaces per element; a write-back sends several thousand
 * elements per batch. Strings are always quoted (so commas,
 * braces, blanks and empty strings are safe), and backslashes and quotes escaped when present.
 */
export function arrayLiteral(values: readonly (string | number | boolean | null | undefined)[]): string {
  let literal = '{';
  for (let i = 0; i < values.length; i++) {
    if (i > 0) literal += ',';
    const value = values[i];
    if (value === null || value === undefined) literal += 'NULL';
    else if (typeof value === 'number') literal += String(value);
    else if (typeof value === 'boolean') literal += value ? 't' : 'f';
    else literal += `"${NEEDS_ESCAPE.test(value) ? value.replace(ESCAPED, '\\$&') : value}"`;
  }
  return `${literal}}`;
}

const NEEDS_ESCAPE = /["\\]/;
const ESCAPED = /["\\]/g;
