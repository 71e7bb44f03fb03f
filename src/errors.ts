/**
 * One error base class. `retriable` tells the worker whether trying again later can help
 * (a dropped connection) or not (a model that does not load); `hint` says what to do.
 */
export class PgscoreError extends Error {
  readonly retriable: boolean;
  readonly hint: string | undefined;

  constructor(message: string, options: { retriable?: boolean; cause?: unknown; hint?: string } = {}) {
    super(message, { cause: options.cause });
    this.name = new.target.name;
    this.retriable = options.retriable ?? false;
    this.hint = options.hint;
  }
}

/** Settings that do not parse; lists every problem at once. */
export class ConfigError extends PgscoreError {}

/** A model that cannot be loaded or run. */
export class ModelError extends PgscoreError {}

/** A CLI argument or file the user gave that cannot be used. */
export class UsageError extends PgscoreError {}

/** The text a person should read for any thrown value, including Postgres' own hint. */
export function describe(error: unknown): string {
  if (error instanceof PgscoreError) {
    return error.hint ? `${error.message}\nhint: ${error.hint}` : error.message;
  }
  if (error instanceof Error) {
    const hint = (error as { hint?: unknown }).hint;
    return typeof hint === 'string' && hint ? `${error.message}\nhint: ${hint}` : error.message;
  }
  return String(error);
}

/** Errors from a lost or refused connection: the worker reconnects instead of giving up. */
export function isConnectionError(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  const code = (error as { code?: unknown }).code;
  if (typeof code === 'string') {
    // 08: connection exception; 57P01-3: admin shutdown, crash shutdown, cannot connect now.
    if (code.startsWith('08') || code === '57P01' || code === '57P02' || code === '57P03') return true;
    if (['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'ENOTFOUND'].includes(code)) return true;
  }
  return /Connection terminated|connection error|Client has encountered a connection error/i.test(error.message);
}

/**
 * Whether trying again later can help: a PgscoreError says so itself (a Kafka broker out of reach
 * is retriable, src/transport/kafka-client.ts); anything else, if it is a lost connection.
 */
export function isRetriable(error: unknown): boolean {
  return (error instanceof PgscoreError && error.retriable) || isConnectionError(error);
}
