import { pino, type Logger } from 'pino';
import pretty from 'pino-pretty';

export type { Logger };

/**
 * Structured logs, one line per event, on stderr (stdout is for command output): JSON for
 * machines, or readable lines when stderr is a terminal.
 */
export function createLogger(level: string): Logger {
  const options = { level, base: { app: 'pgscore' } };
  if (process.stderr.isTTY) return pino(options, pretty({ destination: 2, ignore: 'pid,hostname,app' }));
  return pino(options, pino.destination(2));
}
