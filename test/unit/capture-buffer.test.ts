import { describe, expect, it } from 'vitest';
import { CaptureBuffer } from '../../src/capture/buffer.js';
import { maxLsn } from '../../src/capture/wal.js';

describe('the capture buffer', () => {
  it('keeps each row of a table once, across transactions, and the end of the last transaction', () => {
    const buffer = new CaptureBuffer();
    expect(buffer.empty).toBe(true);
    buffer.add(new Map([[16384, [{ id: '1' }, { id: '2' }]]]));
    buffer.through('0/16B3748');
    buffer.add(new Map([[16384, [{ id: '2' }, { id: '3' }]], [16390, [{ region: 'eu', id: '1' }]]]));
    buffer.through('0/16B3800');
    expect(buffer.rows).toBe(4);
    expect(buffer.lsn).toBe('0/16B3800');
    expect(buffer.toJson()).toEqual({ 16384: [{ id: '1' }, { id: '2' }, { id: '3' }], 16390: [{ region: 'eu', id: '1' }] });
  });

  it('orders LSNs by value, not as text', () => {
    expect(maxLsn(undefined, '0/9')).toBe('0/9');
    expect(maxLsn('0/9', '0/10')).toBe('0/10');
    expect(maxLsn('1/0', 'FF/FFFFFFFF')).toBe('FF/FFFFFFFF');
    expect(maxLsn('A/1', '9/FFFFFFFF')).toBe('A/1');
  });
});
