import { describe, expect, it } from 'vitest';
import { loadConfig, requireDatabaseUrl } from '../../src/config.js';
import { ConfigError } from '../../src/errors.js';

describe('loadConfig', () => {
  it('gives defaults for everything but the database', () => {
    const config = loadConfig({});
    expect(config).toMatchObject({ batchSize: 1000, maxWaitMs: 0, pollIntervalMs: 1000, concurrency: 2, transport: 'notify', logLevel: 'info' });
    expect(Object.isFrozen(config)).toBe(true);
    expect(() => requireDatabaseUrl(config)).toThrow('DATABASE_URL is not set');
  });

  it('reads the environment and lets flags win', () => {
    const config = loadConfig(
      { DATABASE_URL: 'postgres://a@b/c', PGSCORE_BATCH_SIZE: '50', PGSCORE_CONCURRENCY: '3', LOG_LEVEL: 'debug' },
      { batchSize: '70' },
    );
    expect(config).toMatchObject({ databaseUrl: 'postgres://a@b/c', batchSize: 70, concurrency: 3, logLevel: 'debug' });
  });

  it('reports every problem at once, naming where each value came from', () => {
    let error: unknown;
    try {
      loadConfig({ DATABASE_URL: 'mysql://x', PGSCORE_POLL_INTERVAL_MS: 'soon', PGSCORE_TRANSPORT: 'carrier-pigeon' }, { batchSize: '0' });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const message = (error as Error).message;
    expect(message.split('\n')).toHaveLength(5);
    expect(message).toContain('DATABASE_URL="mysql://x": must be a postgres:// or postgresql:// connection string');
    expect(message).toContain('--batch-size="0"');
    expect(message).toContain('PGSCORE_POLL_INTERVAL_MS="soon"');
    expect(message).toContain('PGSCORE_TRANSPORT="carrier-pigeon"');
  });
});
