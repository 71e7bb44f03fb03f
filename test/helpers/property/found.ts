import type { CaseSpec, GatedClass } from './spec.js';

/**
 * Counterexamples the generated suite found (shrunk), replayed as regular tests. A finding whose
 * class is not fixed yet is `gated`: it runs only with PGSCORE_PROPERTY_KNOWN=1 (listed, with its
 * seed, in /work/notes/suite-findings.md).
 */
export interface Found {
  readonly title: string;
  /** The gated class it belongs to while that class is not fixed; false once fixed. */
  readonly gated: GatedClass | false;
  readonly spec: CaseSpec;
}

export const FOUND: readonly Found[] = [];
