import { describe, expect, it } from 'vitest';
import { arrayLiteral } from '../../src/db/array-literal.js';

describe('array literals', () => {
  it('quotes every string and escapes quotes and backslashes; numbers, booleans and NULLs as Postgres reads them', () => {
    expect(arrayLiteral([])).toBe('{}');
    expect(arrayLiteral(['42', '(0,1)', '', 'a,b', 'say "hi"', 'c:\\tmp', '{1,2}', 'NULL'])).toBe(
      '{"42","(0,1)","","a,b","say \\"hi\\"","c:\\\\tmp","{1,2}","NULL"}');
    expect(arrayLiteral([1.5, -0, Number.NaN, Number.POSITIVE_INFINITY, 1e-7])).toBe('{1.5,0,NaN,Infinity,1e-7}');
    expect(arrayLiteral([true, false, null, undefined])).toBe('{t,f,NULL,NULL}');
  });
});
