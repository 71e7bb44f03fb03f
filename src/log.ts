import { pino, type Logger } from 'pino';
import pretty from 'pino-pretty';

export type { Logger };

/**
 * Structured logs, one line per event, on stderr (stdout is for command output): JSON for
 * machines, or readable lines when stderr is a terminal. Errors under `err` are written by
 * serializeError.
 */
export function createLogger(level: string): Logger {
  const options = { level, base: { app: 'pgscore' }, serializers: { err: serializeError } };
  if (process.stderr.isTTY) return pino(options, pretty({ destination: 2, ignore: 'pid,hostname,app' }));
  return pino(options, pino.destination(2));
}

export interface LoggedError {
  readonly type: string;
  readonly message: string;
  readonly code?: string;
  readonly detail?: string;
  readonly hint?: string;
  readonly table?: string;
  readonly constraint?: string;
  readonly cause?: LoggedError;
  readonly stack?: string;
}

/** Postgres' own fields worth a log line; `where` is left out, it quotes the SQL of PL/pgSQL frames. */
const DATABASE_FIELDS = ['detail', 'hint', 'table', 'constraint'] as const;
const MAX_CAUSES = 3;

/**
 * An error as a log line shows it: its type, message, code and what Postgres says of it.
 * pino's standard serializer copies every enumerable property, and pg hangs the client on errors
 * of pooled connections (`err.client`, with its connection parameters and every prepared
 * statement's SQL): one lost connection took 30 lines of a terminal. The stack is kept only for
 * errors that are neither Postgres' nor pgscore's own, where it is the one clue to a bug.
 */
export function serializeError(error: unknown, depth = 0): LoggedError {
  if (!(error instanceof Error)) return { type: typeof error, message: String(error) };
  const fields = error as unknown as Record<string, unknown>;
  const text = (key: string) => (typeof fields[key] === 'string' && fields[key] !== '' ? (fields[key] as string) : undefined);
  const fromDatabase = typeof fields.severity === 'string' && typeof fields.code === 'string';
  const code = text('code') ?? (typeof fields.code === 'number' ? String(fields.code) : undefined);
  const out: Record<string, unknown> = { type: error.constructor?.name || error.name, message: error.message };
  if (code !== undefined) out.code = code;
  for (const key of DATABASE_FIELDS) if (text(key) !== undefined) out[key] = text(key);
  if (error.cause !== undefined && depth < MAX_CAUSES) out.cause = serializeError(error.cause, depth + 1);
  // A PgscoreError (retriable, hint) and Node's system errors (ECONNREFUSED) say what happened.
  const known = fromDatabase || 'retriable' in fields || code !== undefined;
  if (!known && error.stack) out.stack = error.stack;
  return out as unknown as LoggedError;
}
