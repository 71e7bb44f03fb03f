import fc from 'fast-check';
import { afterAll, beforeAll, describe, inject, it, test } from 'vitest';
import { ensureKafkaJars, freePorts, kafkaAvailable, startKafkaBroker, type KafkaBroker } from '../helpers/kafka-broker.js';
import { startKafkaProxy, type KafkaProxy } from '../helpers/kafka-proxy.js';
import { FOUND } from '../helpers/property/found.js';
import { kafkaTransport, type KafkaTransport } from '../helpers/property/kafka-transport.js';
import { runCase } from '../helpers/property/run-case.js';
import { closeSuite, openSuite, type SuiteRoles } from '../helpers/property/setup.js';
import { caseArb, gatesFrom, type CaseSpec } from '../helpers/property/spec.js';
import type { Suite } from '../helpers/property/suite.js';

/**
 * The generated suite (generated.test.ts) with the Kafka transport: the same tables, statements,
 * faults and checks, scored by `pgscore relay` (a child process) and a KafkaWorker, on one real
 * broker behind a proxy, plus the transport's own faults: the relay killed with SIGKILL, the broker
 * stopped and started, the broker's JVM killed with SIGKILL and started again on its data dir, a
 * dropped produce acknowledgement (spec.ts TransportFault). After each, what was stopped runs
 * again and the drain waits until nothing is queued or in Kafka: no row may be lost, stale or
 * scored from old values.
 *
 * PGSCORE_PROPERTY_KAFKA_RUNS (default 15) bounds the cases; PGSCORE_PROPERTY_SEED,
 * PGSCORE_PROPERTY_PATH, PGSCORE_PROPERTY_CASE, PGSCORE_PROPERTY_FAULT (also relay-kill,
 * broker-restart, broker-kill, drop-ack), PGSCORE_PROPERTY_KNOWN and PGSCORE_PROPERTY_SHRINK=0 as
 * in generated.test.ts. Skipped where Java or Maven is missing, except in CI, where that fails.
 */
const RUNS = Number(process.env.PGSCORE_PROPERTY_KAFKA_RUNS ?? 15);
// CI replays a fixed seed (a regression gate); elsewhere a new one each run, printed to replay it.
const SEED = process.env.PGSCORE_PROPERTY_SEED
  ? Number(process.env.PGSCORE_PROPERTY_SEED)
  : process.env.CI === 'true' ? 20261208 : (Math.random() * 2 ** 31) | 0;
const PATH = process.env.PGSCORE_PROPERTY_PATH;
const GATES = gatesFrom(process.env.PGSCORE_PROPERTY_KNOWN, process.env.PGSCORE_PROPERTY_FAULT, 'kafka');

const availability = await kafkaAvailable();
const skipReason = availability.ok ? undefined : availability.reason;
if (skipReason !== undefined && process.env.CI === 'true') {
  test('Kafka prerequisites (required in CI)', () => {
    throw new Error(`cannot run a Kafka broker: ${skipReason}`);
  });
}

describe.skipIf(skipReason !== undefined)('generated cases with the Kafka transport and its faults', () => {
  let broker: KafkaBroker | undefined;
  let proxy: KafkaProxy | undefined;
  let transport: KafkaTransport | undefined;
  let suite: Suite;
  let roles: SuiteRoles;

  beforeAll(async () => {
    await ensureKafkaJars();
    const [brokerPort] = (await freePorts(1)) as [number];
    proxy = await startKafkaProxy(brokerPort);
    broker = await startKafkaBroker({ port: brokerPort, advertisedPort: proxy.port });
    ({ suite, roles } = await openSuite({
      adminUrl: inject('adminUrl'),
      gates: GATES,
      // A broker restart costs the consumer group its session (about 6 s) and a crash back-off.
      drainTimeoutMs: Number(process.env.PGSCORE_PROPERTY_DRAIN_MS ?? 60_000),
      start: async (db) => (transport = await kafkaTransport(db, broker!, proxy!)),
    }));
    console.log(`generated Kafka suite: ${RUNS} cases, seed ${SEED} (PGSCORE_PROPERTY_SEED=${SEED} replays them)`);
  });
  afterAll(async () => {
    await closeSuite(suite, roles, { seed: SEED, kafkaFaults: transport?.counts, workerFailures: transport?.workerFailures });
    await broker?.close();
    await proxy?.close();
  });

  // Counterexamples this suite found (found.ts, transport 'kafka').
  for (const found of FOUND.filter((f) => f.transport === 'kafka' && (!f.gated || GATES.known.has(f.gated)))) {
    it(`replays: ${found.title}`, async () => {
      await runCase(suite, found.spec);
    }, 180_000);
  }

  if (process.env.PGSCORE_PROPERTY_CASE) {
    it('replays PGSCORE_PROPERTY_CASE', async () => {
      await runCase(suite, JSON.parse(process.env.PGSCORE_PROPERTY_CASE!) as CaseSpec);
    }, 180_000);
  }

  // A case with a broker fault takes 10-20 s; shrinking one runs many: fast-check stops in time
  // to report the smallest counterexample it has so far (the run then fails as interrupted).
  const timeoutMs = Math.max(300_000, RUNS * 40_000);
  it(`holds for ${RUNS} generated cases`, async () => {
    await fc.assert(
      fc.asyncProperty(caseArb(GATES), async (spec) => {
        await runCase(suite, spec);
      }),
      {
        numRuns: RUNS,
        seed: SEED,
        path: PATH,
        endOnFailure: process.env.PGSCORE_PROPERTY_SHRINK === '0',
        interruptAfterTimeLimit: timeoutMs - 60_000,
        markInterruptAsFailure: true,
        verbose: 1,
      },
    );
  }, timeoutMs);
});
