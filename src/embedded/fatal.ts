import { describe } from '../errors.js';
import type { Logger } from '../log.js';

/** What `pgscore up` must stop before its process ends. */
export interface Guarded {
  /** Stops the worker (and its status page). */
  stopWorker(): Promise<void>;
  /** Stops the embedded Postgres and waits for it. */
  stopServer(): Promise<void>;
  /** Asks the embedded Postgres to shut down, without waiting: for a process that is exiting. */
  signalServer(): void;
}

const WORKER_STOP_MS = 10_000;
const SERVER_STOP_MS = 30_000;

function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} took longer than ${ms} ms`)), ms);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

/**
 * `pgscore up` never exits leaving its Postgres running. Node ends the process at once on an
 * error nothing caught (an exception thrown in a socket handler, a rejected promise nobody
 * awaited): the embedded server, a child process, stayed behind with no one to stop it. Here
 * such an error is logged, the worker and then the server are stopped (each within a deadline),
 * and the process exits with 1. On any other exit the server is at least told to shut down.
 * Returns the function that lifts the guard once the server is stopped.
 */
export function stopOnFatalError(guarded: Guarded, log: Logger): () => void {
  let fatal = false;
  const onFatal = (error: unknown) => {
    if (fatal) return;
    fatal = true;
    const code = (error as { code?: unknown } | null)?.code;
    log.fatal({ code: typeof code === 'string' ? code : undefined }, `fatal error, stopping the worker and the embedded Postgres: ${describe(error)}`);
    void within(guarded.stopWorker(), WORKER_STOP_MS, 'stopping the worker')
      .catch((stopError: unknown) => log.warn(`the worker did not stop cleanly: ${describe(stopError)}`))
      .then(() => within(guarded.stopServer(), SERVER_STOP_MS, 'stopping Postgres'))
      .catch((stopError: unknown) => log.warn(`Postgres did not stop cleanly: ${describe(stopError)}`))
      .finally(() => process.exit(1));
  };
  const onExit = () => guarded.signalServer();
  process.on('uncaughtException', onFatal);
  process.on('unhandledRejection', onFatal);
  process.on('exit', onExit);
  return () => {
    process.off('uncaughtException', onFatal);
    process.off('unhandledRejection', onFatal);
    process.off('exit', onExit);
  };
}
