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
      // onnxruntime's CPU arena stays on (the default): without it, malloc's heap grew to 60-120 MiB
      // instead of 28 over 2,000 runs of 1000-row batches (tensors of every size, freed out of
      // order, fragment it). Its memory patterns (one per batch size) neither grew nor saved memory
      // with batch sizes from 1 to 1000.
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

/** Where a batch gets its sessions (the pipeline's ModelSource), holding each until released. */
export interface SessionLease {
  get(name: string, version: number): Promise<LoadedModel>;
  /** Lets go of every session this lease handed out; a retired one no one holds is released. */
  release(): void;
}

/**
 * How long a session handed out without a lease (SessionCache.get) counts as held: such a caller
 * (the Kafka worker's batch) holds it for milliseconds.
 */
const UNLEASED_HOLD_MS = 5_000;

function release(model: Promise<LoadedModel>): Promise<void> {
  return model.then((loaded) => loaded.session.release(), () => undefined);
}

interface Entry {
  readonly ref: string;
  readonly model: Promise<LoadedModel>;
  /** Batches (leases) and unleased callers using the session right now. */
  holds: number;
  retired: boolean;
}

/**
 * One session per model version, shared by every deployment that scores with it. A version
 * that fails to load is remembered (with the reason) until the cache is told to forget it.
 * A session the deployments no longer use (after a promotion or an undeploy) is released as
 * soon as no batch holds it: with a model of hundreds of MB, sessions kept for a fixed time
 * after each promotion would add up.
 */
export class SessionCache {
  readonly #entries = new Map<string, Entry>();
  /** Retired sessions a batch still holds; a rollback in the meantime uses them again. */
  readonly #retired = new Map<string, Entry>();

  constructor(
    private readonly fetchBytes: (name: string, version: number) => Promise<Uint8Array>,
    private readonly options: SessionOptions,
  ) {}

  /**
   * The session of a version, held for a few seconds (UNLEASED_HOLD_MS) in case it is retired
   * meanwhile; a batch should take its sessions from a lease instead.
   */
  get(name: string, version: number): Promise<LoadedModel> {
    const entry = this.#hold(name, version);
    setTimeout(() => this.#drop(entry), UNLEASED_HOLD_MS).unref();
    return entry.model;
  }

  /** A batch's view of the cache: what it gets stays loaded until it calls release(). */
  lease(): SessionLease {
    const held: Entry[] = [];
    return {
      get: (name, version) => {
        const entry = this.#hold(name, version);
        held.push(entry);
        return entry.model;
      },
      release: () => {
        for (const entry of held.splice(0)) this.#drop(entry);
      },
    };
  }

  #hold(name: string, version: number): Entry {
    const ref = `${name}@${version}`;
    let entry = this.#entries.get(ref) ?? this.#revive(ref);
    if (!entry) {
      const model = this.fetchBytes(name, version).then((bytes) => loadModel(ref, bytes, this.options));
      const created: Entry = { ref, model, holds: 0, retired: false };
      this.#entries.set(ref, created);
      // A model that cannot load stays failed; a lost connection is tried again next time.
      model.catch((error: unknown) => {
        if (!(error instanceof ModelError) && this.#entries.get(ref) === created) this.#entries.delete(ref);
      });
      entry = created;
    }
    entry.holds += 1;
    return entry;
  }

  #drop(entry: Entry): void {
    entry.holds -= 1;
    if (entry.retired && entry.holds === 0) this.#release(entry);
  }

  #release(entry: Entry): void {
    if (this.#retired.get(entry.ref) === entry) this.#retired.delete(entry.ref);
    void release(entry.model);
  }

  /**
   * Forgets every session whose reference is not in keep (after promotions, undeploys), and
   * releases it once no batch holds it.
   */
  retain(keep: ReadonlySet<string>): void {
    for (const [ref, entry] of this.#entries) {
      if (keep.has(ref)) continue;
      this.#entries.delete(ref);
      entry.retired = true;
      if (entry.holds > 0) this.#retired.set(ref, entry);
      else this.#release(entry);
    }
  }

  /** A retired session that a batch still holds (a rollback right after a promotion) is used again. */
  #revive(ref: string): Entry | undefined {
    const entry = this.#retired.get(ref);
    if (!entry) return undefined;
    this.#retired.delete(ref);
    entry.retired = false;
    this.#entries.set(ref, entry);
    return entry;
  }

  /** Releases every session, held or not (the worker has stopped its batches). */
  async close(): Promise<void> {
    const entries = [...this.#entries.values(), ...this.#retired.values()];
    for (const entry of entries) entry.retired = false; // a late #drop releases nothing twice
    this.#entries.clear();
    this.#retired.clear();
    await Promise.all(entries.map((entry) => release(entry.model)));
  }
}
