import { Writable } from 'node:stream';
import pg from 'pg';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { PgscoreError } from '../../src/errors.js';
import { serializeError } from '../../src/log.js';

/** A pg error as pg-pool hands it over when an idle pooled connection is terminated: client attached. */
function terminated(): Error {
  const error = new pg.DatabaseError('terminating connection due to administrator command', 116, 'error');
  Object.assign(error, {
    severity: 'FATAL',
    code: '57P01',
    where: 'SQL statement "SELECT ml._enqueue_3()"',
    client: { connectionParameters: { user: 'pgscore_worker' }, _prepared: { claim_3: 'SELECT * FROM ml._queue_3 FOR UPDATE SKIP LOCKED' } },
  });
  return error;
}

describe('serializeError', () => {
  it("keeps a database error's message, code and Postgres' fields, not its client, SQL or stack", () => {
    const error = Object.assign(terminated(), { detail: 'Key (id)=(1) exists.', hint: 'Retry.', table: 'iris', constraint: 'iris_pkey' });
    expect(serializeError(error)).toEqual({
      type: 'DatabaseError',
      message: 'terminating connection due to administrator command',
      code: '57P01',
      detail: 'Key (id)=(1) exists.',
      hint: 'Retry.',
      table: 'iris',
      constraint: 'iris_pkey',
    });
  });

  it('keeps the causes and their hints; a stack only for errors that are not pgscore or Postgres ones', () => {
    const error = new PgscoreError('model iris@1 does not load', { hint: 'push it again', cause: new TypeError('x is undefined') });
    const logged = serializeError(error);
    expect(logged).toMatchObject({ type: 'PgscoreError', message: 'model iris@1 does not load', hint: 'push it again' });
    expect(logged.stack).toBeUndefined();
    expect(logged.cause).toMatchObject({ type: 'TypeError', message: 'x is undefined' });
    expect(logged.cause?.stack).toContain('TypeError: x is undefined');
    expect(serializeError('plain text')).toEqual({ type: 'string', message: 'plain text' });
  });

  it('is what a logger writes under err', () => {
    let written = '';
    const sink = new Writable({ write: (chunk: Buffer, _encoding, done) => ((written += chunk.toString()), done()) });
    pino({ serializers: { err: serializeError } }, sink).warn({ deployment: 'iris_species', err: terminated() }, 'idle pooled connection lost');
    const line = JSON.parse(written) as Record<string, unknown>;
    expect(line.err).toEqual({ type: 'DatabaseError', message: 'terminating connection due to administrator command', code: '57P01' });
    expect(written).not.toMatch(/client|_prepared|SELECT|stack/);
  });
});
