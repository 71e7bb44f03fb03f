import ort from 'onnxruntime-node';

/**
 * onnxruntime's native logger writes coloured, timestamped text straight to file descriptor 2.
 * onnxruntime-node offers no callback to receive those messages, so they cannot be routed
 * through pino; the only lever is their severity threshold. pgscore therefore silences them by
 * default ('fatal'): every failure that matters still reaches JavaScript as a thrown Error
 * (a model that does not load, a run that fails on a row), and pgscore logs those structured.
 *
 * Measured with onnxruntime-node 1.30 (a model whose declared output shape is [1] scored in
 * batches of 5, and a Reshape that fails at run time), at the default threshold ('warning'):
 * one `[W:onnxruntime … VerifyOutputSizes]` line per output per run, and one
 * `[E:onnxruntime … ExecuteKernel] Non-zero status code …` line per failing run, which the
 * bisection in scoreRows repeats about twice per row of a failing batch. At 'fatal' stderr is
 * empty and both errors are still thrown. Invalid input shapes and unloadable models are
 * rejected without any native line at any threshold.
 *
 * Three settings decide what is printed, and each overrides the one before:
 * - `env.logLevel`, read once, when the first session is created (onnxruntime-node's initOrt);
 *   it covers messages outside a session (device discovery at 'verbose'/'info');
 * - the session option `logSeverityLevel`, which covers loading and every run of the session;
 * - the run option `logSeverityLevel`, which can lower the threshold for one run.
 * Setting all three to the same level makes the configured level hold everywhere.
 */

/** The names PGSCORE_ORT_LOG_LEVEL accepts, least severe first. */
export const ORT_LOG_LEVELS = ['verbose', 'info', 'warning', 'error', 'fatal'] as const;
export type OrtLogLevel = (typeof ORT_LOG_LEVELS)[number];

/** Native output is off unless asked for (for debugging a model). */
export const DEFAULT_ORT_LOG_LEVEL: OrtLogLevel = 'fatal';

/** onnxruntime's numeric severity (include/onnxruntime/core/common/logging/severity.h). */
export type OrtSeverity = 0 | 1 | 2 | 3 | 4;

const SEVERITY: Readonly<Record<OrtLogLevel, OrtSeverity>> = {
  verbose: 0,
  info: 1,
  warning: 2,
  error: 3,
  fatal: 4,
};

let configured: OrtLogLevel | undefined;

/**
 * Sets the threshold of onnxruntime's native logging. Call it once at start-up, before the first
 * model is loaded: `env.logLevel` is read only then. Sessions and runs created later take the
 * level from `ortLogSeverity()`, so a later call still governs them.
 */
export function configureOrtLogging(level: OrtLogLevel = DEFAULT_ORT_LOG_LEVEL): OrtSeverity {
  ort.env.logLevel = level;
  configured = level;
  return SEVERITY[level];
}

/**
 * The `logSeverityLevel` for session create and run options. Without a prior
 * configureOrtLogging it applies the default first, so that a session is never created with
 * onnxruntime's own default ('warning').
 */
export function ortLogSeverity(): OrtSeverity {
  return configured === undefined ? configureOrtLogging() : SEVERITY[configured];
}
