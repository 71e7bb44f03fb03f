import ort from 'onnxruntime-node';
import { ModelError } from '../errors.js';
import { ortLogSeverity } from './ort-log.js';
import { signatureOf, type Signature } from './signature.js';

export interface LoadedModel {
  readonly ref: string;
  readonly session: ort.InferenceSession;
  readonly signature: Signature;
}

export interface SessionOptions {
  /** Threads per session run; Postgres shares the machine, so the default is 1. */
  readonly threads: number;
}

/** Loads ONNX bytes into an onnxruntime session, or throws a ModelError that says why not. */
export async function loadModel(ref: string, bytes: Uint8Array, options: SessionOptions): Promise<LoadedModel> {
  let session: ort.InferenceSession;
  try {
    session = await ort.InferenceSession.create(bytes, {
      intraOpNumThreads: options.threads,
      interOpNumThreads: 1,
      executionMode: 'sequential',
      graphOptimizationLevel: 'all',
      // Native log lines bypass pino and go straight to stderr; see ort-log.ts.
      logSeverityLevel: ortLogSeverity(),
    });
  } catch (error) {
    throw new ModelError(`onnxruntime cannot load model ${ref}: ${(error as Error).message}`, { cause: error });
  }
  return { ref, session, signature: signatureOf(session) };
}

/**
 * Options every `session.run` should pass: the same log threshold as the session, so that one
 * run cannot print native lines the configured level silences (see ort-log.ts).
 */
export function runOptions(): ort.InferenceSession.RunOptions {
  return { logSeverityLevel: ortLogSeverity() };
}

/**
 * One session per model version, shared by every deployment that scores with it. A version
 * that fails to load is remembered (with the reason) until the cache is told to forget it.
 */
// A batch holds a session for milliseconds; a few seconds is plenty before releasing it.
const RELEASE_DELAY_MS = 5_000;

function release(entry: Promise<LoadedModel>): Promise<void> {
  return entry.then((model) => model.session.release(), () => undefined);
}

export class SessionCache {
  readonly #entries = new Map<string, Promise<LoadedModel>>();
  readonly #retired = new Map<NodeJS.Timeout, { ref: string; entry: Promise<LoadedModel> }>();

  constructor(
    private readonly fetchBytes: (name: string, version: number) => Promise<Uint8Array>,
    private readonly options: SessionOptions,
  ) {}

  get(name: string, version: number): Promise<LoadedModel> {
    const ref = `${name}@${version}`;
    let entry = this.#entries.get(ref) ?? this.#revive(ref);
    if (!entry) {
      entry = this.fetchBytes(name, version).then((bytes) => loadModel(ref, bytes, this.options));
      this.#entries.set(ref, entry);
      // A model that cannot load stays failed; a lost connection is tried again next time.
      entry.catch((error: unknown) => {
        if (!(error instanceof ModelError)) this.#entries.delete(ref);
      });
    }
    return entry;
  }

  /**
   * Forgets every session whose reference is not in keep (after promotions, undeploys), and
   * releases it a little later: a batch that already holds it may still be running.
   */
  retain(keep: ReadonlySet<string>): void {
    for (const [ref, entry] of this.#entries) {
      if (keep.has(ref)) continue;
      this.#entries.delete(ref);
      const timer = setTimeout(() => {
        this.#retired.delete(timer);
        void release(entry);
      }, RELEASE_DELAY_MS);
      timer.unref();
      this.#retired.set(timer, { ref, entry });
    }
  }

  /** A session retired a moment ago (a rollback right after a promotion) is used again. */
  #revive(ref: string): Promise<LoadedModel> | undefined {
    for (const [timer, retired] of this.#retired) {
      if (retired.ref !== ref) continue;
      clearTimeout(timer);
      this.#retired.delete(timer);
      this.#entries.set(ref, retired.entry);
      return retired.entry;
    }
    return undefined;
  }

  async close(): Promise<void> {
    const entries = [...this.#entries.values(), ...[...this.#retired.values()].map((r) => r.entry)];
    for (const timer of this.#retired.keys()) clearTimeout(timer);
    this.#entries.clear();
    this.#retired.clear();
    await Promise.all(entries.map(release));
  }
}
