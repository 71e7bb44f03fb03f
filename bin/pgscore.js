#!/usr/bin/env node
import v8 from 'node:v8';
// Runs the TypeScript sources directly (tsx), so a clone needs no build step.
import { register } from 'tsx/esm/api';

// The worker's live heap is about 20 MiB, but V8 lets the old generation grow to up to 4 times
// what survived the last full collection (a factor it adapts to the GC's speed) before the next
// one, and malloc'd ArrayBuffers that reached it wait as long to be freed: under load the
// worker's RSS crept from 205 to 225 MiB over 10M predictions (bench scenario 7). A fixed factor
// of 2 kept it flat at 180-190 MiB. The cost, measured over 2M predictions of bulk traffic: 55
// full collections per million predictions instead of 20, 0.3 s more pause and about 1 s more
// CPU (7.8-8.5 s instead of 6.4-7.2 s, the rest on V8's helper threads); the drain rate did not
// change (Postgres is the bottleneck). `node --heap-growing-percent=N bin/pgscore.js` chooses another.
if (!process.execArgv.some((arg) => arg.startsWith('--heap-growing-percent'))) {
  v8.setFlagsFromString('--heap-growing-percent=100');
}
register();
await import('../src/cli.ts');
