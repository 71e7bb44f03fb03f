/**
 * `/metrics` of `pgscore worker` and `pgscore relay`, scraped over HTTP and parsed with a
 * Prometheus text-format parser, against what the database says: rows with predictions, dead
 * letters, queued rows, rows in Kafka. And `pgscore status --watch`.
 */
import { afterAll, beforeAll, describe, expect, it, test } from 'vitest';
import { exited, pgscore, startPgscore } from '../helpers/cli.js';
import { createTestDatabase, pending, push, waitFor, type TestDatabase } from '../helpers/db.js';
import { freePort } from '../helpers/ports.js';
import { parseMetrics, type PromHistogram, type PromLabels, type PromSample } from '../helpers/scrape.js';
import { ensureKafkaJars, kafkaAvailable, startKafkaBroker, type KafkaBroker } from '../helpers/kafka-broker.js';

/** The metrics pgscore defines itself (the rest are prom-client's process metrics). */
const OWN = /^pgscore_(rows_|dead_letters_total|batch_|queue_|kafka_|deployment_|status_up)/;

const matches = (labels: PromLabels, wanted: PromLabels) => Object.entries(wanted).every(([k, v]) => labels[k] === v);

/** GET /metrics, parsed as Prometheus parses it (test/helpers/scrape.ts). */
async function scrape(port: number) {
  const response = await fetch(`http://127.0.0.1:${port}/metrics`);
  expect(response.status).toBe(200);
  expect(response.headers.get('content-type')).toBe('text/plain; version=0.0.4; charset=utf-8');
  const metrics = parseMetrics(await response.text());
  const sample = (name: string, labels: PromLabels = {}) => (metrics[name]?.data as PromSample[] | undefined)?.find((d) => matches(d.labels, labels));
  return {
    metrics,
    sample,
    value: (name: string, labels: PromLabels = {}) => sample(name, labels)?.value,
    histogram: (name: string, labels: PromLabels) =>
      (metrics[name]?.data as PromHistogram[] | undefined)?.find((d) => matches(d.labels, labels)),
    /** Every series of pgscore's own metrics, as name{labels}: what must not grow with rows. */
    series: () =>
      Object.entries(metrics)
        .filter(([name]) => OWN.test(name))
        .flatMap(([name, metric]) => metric.data.map((d) => `${name}${JSON.stringify(d.labels)}`))
        .sort(),
  };
}

/**
 * Scrapes until a counter has reached at least `atLeast`: a batch is counted just after its
 * commit, which the test may see first. Equality is then asserted on what was scraped.
 */
function scrapeWhen(port: number, name: string, labels: PromLabels, atLeast: number) {
  return waitFor(async () => {
    const m = await scrape(port);
    return (m.value(name, labels) ?? 0) >= atLeast ? m : undefined;
  }, `${name}${JSON.stringify(labels)} to reach ${atLeast}`, 10_000);
}


const count = async (db: TestDatabase, sql: string) => Number((await db.sql<{ n: string }>(sql))[0]!.n);
const statusOf = async (db: TestDatabase, deployment: string) =>
  (await db.sql<{ pending: string; dead_letters: string; in_kafka: string | null; age: number }>(
    `SELECT pending, dead_letters, in_kafka, extract(epoch FROM oldest_pending_age)::float8 AS age FROM ml.status WHERE deployment = $1`,
    [deployment],
  ))[0]!;

describe('pgscore worker --metrics-port', () => {
  let db: TestDatabase;
  let port: number;
  let worker: ReturnType<typeof startPgscore>;

  const table = (name: string) => `CREATE TABLE ${name} (id int PRIMARY KEY, sl real, sw real, pl real, pw real, species text)`;
  const deploy = (name: string, model: string) =>
    db.sql(`SELECT ml.deploy($1::text, $1::regclass, $2, '{"X": ["sl", "sw", "pl", "pw"]}', '{"species": "label"}')`, [name, model]);
  const insert = (name: string, from: number, to: number, sl = 'g % 7 + 1') =>
    db.sql(`INSERT INTO ${name} (id, sl, sw, pl, pw) SELECT g, ${sl}, 3.5, 1.4, 0.2 FROM generate_series(${from}, ${to}) g`);

  beforeAll(async () => {
    db = await createTestDatabase();
    await push(db, 'iris', 'iris.onnx');
    // "stalled": its model's bytes went bad after registration, so the failure policy pauses it
    // and its rows stay queued (as in test/integration/kafka.test.ts).
    await push(db, 'fragile', 'iris.onnx');
    for (const name of ['flowers', 'mixed', 'stalled']) await db.sql(table(name));
    await deploy('flowers', 'iris');
    await deploy('mixed', 'iris');
    await deploy('stalled', 'fragile');
    await db.sql(`UPDATE ml._models SET onnx = '\\x00010203' WHERE name = 'fragile'`);
    await insert('stalled', 1, 3);

    port = await freePort();
    worker = startPgscore(['worker', '--metrics-port', String(port)], {
      DATABASE_URL: db.workerUrl,
      PGSCORE_POLL_INTERVAL_MS: '200',
      PGSCORE_LOG_LEVEL: 'info',
    });
    await waitFor(() => Promise.resolve(worker.output().includes('"msg":"worker ready"') || worker.exitCode !== null), 'worker ready');
    expect(worker.output()).toContain(`"metrics":"http://127.0.0.1:${port}/metrics"`);

    // Several statements, so several batches; mixed gets 4 rows the model cannot take (NaN).
    for (const [from, to] of [[1, 10], [11, 30], [31, 60]] as const) await insert('flowers', from, to);
    await insert('mixed', 1, 8);
    await insert('mixed', 9, 12, "'NaN'::real");
    await waitFor(
      async () =>
        (await count(db, 'SELECT count(*) AS n FROM flowers WHERE species IS NOT NULL')) === 60 &&
        (await pending(db, 'mixed')) === 0 &&
        (await count(db, `SELECT count(*) AS n FROM ml.errors WHERE deployment = 'mixed'`)) === 4,
      'flowers and mixed handled',
    );
    await waitFor(async () => (await scrape(port)).value('pgscore_batch_failures_total', { deployment: 'stalled' }), 'stalled paused');
  });
  afterAll(async () => {
    if (worker) {
      worker.kill('SIGTERM');
      await exited(worker);
    }
    await db?.drop();
  });

  it('counts rows scored and dead letters as the database has them', async () => {
    const flowers = await count(db, 'SELECT count(*) AS n FROM flowers WHERE species IS NOT NULL');
    const mixed = await count(db, 'SELECT count(*) AS n FROM mixed WHERE species IS NOT NULL');
    const deadLetters = Number((await statusOf(db, 'mixed')).dead_letters);
    expect([flowers, mixed, deadLetters]).toEqual([60, 8, 4]);
    await scrapeWhen(port, 'pgscore_rows_scored_total', { deployment: 'flowers' }, flowers);
    await scrapeWhen(port, 'pgscore_rows_scored_total', { deployment: 'mixed' }, mixed);
    const m = await scrapeWhen(port, 'pgscore_dead_letters_total', { deployment: 'mixed' }, deadLetters);
    expect(m.value('pgscore_rows_scored_total', { deployment: 'flowers' })).toBe(flowers);
    expect(m.value('pgscore_rows_scored_total', { deployment: 'mixed' })).toBe(mixed);
    expect(m.value('pgscore_dead_letters_total', { deployment: 'mixed' })).toBe(deadLetters);
    expect(m.value('pgscore_deployment_dead_letters', { deployment: 'mixed' })).toBe(deadLetters);
    expect(m.value('pgscore_dead_letters_total', { deployment: 'flowers' })).toBe(0);
    // A deployment that never scored a row has its counters at 0, not absent.
    expect(m.value('pgscore_rows_scored_total', { deployment: 'stalled' })).toBe(0);
  });

  it('counts failed batches by the failure policy, and shows what waits in the queues', async () => {
    const m = await scrape(port);
    expect(m.value('pgscore_batch_failures_total', { deployment: 'stalled', kind: 'pause' })).toBeGreaterThanOrEqual(1);
    expect(m.value('pgscore_status_up')).toBe(1);
    const stalled = await statusOf(db, 'stalled');
    expect(m.value('pgscore_queue_pending', { deployment: 'stalled' })).toBe(Number(stalled.pending));
    expect(m.value('pgscore_queue_pending', { deployment: 'stalled' })).toBe(3);
    expect(m.value('pgscore_queue_oldest_age_seconds', { deployment: 'stalled' })).toBeGreaterThan(0);
    expect(m.value('pgscore_queue_oldest_age_seconds', { deployment: 'stalled' })).toBeLessThanOrEqual(stalled.age + 5);
    expect(m.value('pgscore_queue_pending', { deployment: 'flowers' })).toBe(0);
    expect(m.value('pgscore_queue_oldest_age_seconds', { deployment: 'flowers' })).toBe(0);
    // in_kafka is NULL with the notify transport: no lag series.
    expect(m.sample('pgscore_kafka_lag_rows')).toBeUndefined();
  });

  it('times each batch phase in a histogram, and serves the process metrics', async () => {
    const m = await scrape(port);
    const phases = ['claim', 'score', 'write'].map((phase) => m.histogram('pgscore_batch_phase_seconds', { deployment: 'flowers', phase }));
    const batches = phases[0]!.count;
    expect(batches).toBeGreaterThanOrEqual(1);
    expect(batches).toBeLessThanOrEqual(60);
    for (const phase of phases) {
      expect(phase?.count).toBe(batches);
      expect(phase?.buckets['+Inf']).toBe(batches);
      expect(phase?.sum).toBeGreaterThan(0);
    }
    expect(m.value('pgscore_process_cpu_user_seconds_total')).toBeGreaterThan(0);
    expect(m.value('pgscore_process_resident_memory_bytes')).toBeGreaterThan(0);
    expect(m.value('pgscore_nodejs_heap_size_used_bytes')).toBeGreaterThan(0);
  });

  it('labels are deployments, phases and failure kinds only: more rows add no series', async () => {
    const before = await scrape(port);
    for (const [name, metric] of Object.entries(before.metrics).filter(([name]) => OWN.test(name))) {
      for (const { labels } of metric.data) {
        expect(Object.keys(labels).filter((label) => !['deployment', 'phase', 'kind'].includes(label)), name).toEqual([]);
        if (labels.deployment) expect(['flowers', 'mixed', 'stalled']).toContain(labels.deployment);
      }
    }
    await insert('flowers', 61, 560);
    await waitFor(async () => (await count(db, 'SELECT count(*) AS n FROM flowers WHERE species IS NOT NULL')) === 560, 'more rows scored');
    const after = await scrapeWhen(port, 'pgscore_rows_scored_total', { deployment: 'flowers' }, 560);
    expect(after.series()).toEqual(before.series());
    expect(after.value('pgscore_rows_scored_total', { deployment: 'flowers' })).toBe(560);
  });

  it('answers 404 outside /metrics and the status page', async () => {
    const response = await fetch(`http://127.0.0.1:${port}/nothing-here`);
    expect(response.status).toBe(404);
  });

  it('refuses a bad or taken metrics port with exit code 2', async () => {
    const bad = await pgscore(['worker', '--metrics-port', '99999'], { DATABASE_URL: db.workerUrl });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain(`--metrics-port="99999": must be a port number, or 0 or 'off' for no metrics`);
    const taken = await pgscore(['worker'], { DATABASE_URL: db.workerUrl, PGSCORE_METRICS_PORT: String(port) });
    expect(taken.code).toBe(2);
    expect(taken.stderr).toContain(`pgscore: cannot serve metrics on 127.0.0.1:${port}: the port is in use\nhint: `);
  });

  it('status --watch redraws ml.status every 2 s until SIGINT, then exits 0', async () => {
    const watch = startPgscore(['status', '--watch'], { DATABASE_URL: db.url });
    try {
      const frames = () => watch.output().split('ml.status at ').length - 1;
      await waitFor(() => Promise.resolve(frames() >= 2 || watch.exitCode !== null), 'two frames', 15_000);
      expect(watch.output()).toMatch(/│ flowers\s+│ iris@1\s+│ active\s+│ 0\s+│/);
      expect(watch.output()).toMatch(/│ stalled\s+│ fragile@1\s+│ active\s+│ 3\s+│/);
    } finally {
      watch.kill('SIGINT');
    }
    expect(await exited(watch)).toBe(0);
  });
});

const availability = await kafkaAvailable();
const skipReason = availability.ok ? undefined : availability.reason;
if (skipReason !== undefined && process.env.CI === 'true') {
  test('Kafka prerequisites (required in CI)', () => {
    throw new Error(`cannot run a Kafka broker: ${skipReason}`);
  });
}

describe.skipIf(skipReason !== undefined)('pgscore relay and kafka worker --metrics-port', () => {
  let broker: KafkaBroker;
  let db: TestDatabase;

  beforeAll(async () => {
    await ensureKafkaJars();
    [broker, db] = await Promise.all([startKafkaBroker(), createTestDatabase()]);
    await push(db, 'iris', 'iris.onnx');
    await db.sql(`CREATE TABLE flowers (id int PRIMARY KEY, sl real, sw real, pl real, pw real, species text)`);
    await db.sql(`SELECT ml.deploy('flowers', 'flowers', 'iris', '{"X": ["sl", "sw", "pl", "pw"]}', '{"species": "label"}')`);
  });
  afterAll(async () => {
    await broker?.close();
    await db?.drop();
  });

  it('the relay counts rows relayed and the lag; the worker counts them scored', async () => {
    const [relayPort, workerPort] = [await freePort(), await freePort()];
    const env = { DATABASE_URL: db.workerUrl, KAFKA_BROKERS: broker.brokers.join(','), PGSCORE_KAFKA_PARTITIONS: '2', PGSCORE_LOG_LEVEL: 'info' };
    const relay = startPgscore(['relay', '--metrics-port', String(relayPort)], env);
    let worker: ReturnType<typeof startPgscore> | undefined;
    try {
      await waitFor(() => Promise.resolve(relay.output().includes('"msg":"relay ready"') || relay.exitCode !== null), 'relay ready');
      await db.sql(`INSERT INTO flowers (id, sl, sw, pl, pw) SELECT g, 5.1, 3.5, 1.4, 0.2 FROM generate_series(1, 300) g`);
      // No worker yet: every row waits in Kafka.
      await waitFor(async () => (await statusOf(db, 'flowers')).in_kafka === '300', 'rows relayed');
      const relayed = await scrapeWhen(relayPort, 'pgscore_rows_relayed_total', { deployment: 'flowers' }, 300);
      expect(relayed.value('pgscore_rows_relayed_total', { deployment: 'flowers' })).toBe(300);
      expect(relayed.value('pgscore_kafka_lag_rows', { deployment: 'flowers' })).toBe(300);
      expect(relayed.histogram('pgscore_batch_phase_seconds', { deployment: 'flowers', phase: 'produce' })?.count).toBeGreaterThanOrEqual(1);
      expect(relayed.sample('pgscore_rows_scored_total')).toBeUndefined();

      worker = startPgscore(['worker', '--transport', 'kafka', '--metrics-port', String(workerPort)], env);
      await waitFor(async () => (await count(db, 'SELECT count(*) AS n FROM flowers WHERE species IS NOT NULL')) === 300, 'rows scored');
      await waitFor(async () => (await statusOf(db, 'flowers')).in_kafka === '0', 'lag consumed');
      const scored = await scrapeWhen(workerPort, 'pgscore_rows_scored_total', { deployment: 'flowers' }, 300);
      expect(scored.value('pgscore_rows_scored_total', { deployment: 'flowers' })).toBe(300);
      expect(scored.value('pgscore_kafka_lag_rows', { deployment: 'flowers' })).toBe(0);
      expect((await scrape(relayPort)).value('pgscore_kafka_lag_rows', { deployment: 'flowers' })).toBe(0);
    } finally {
      for (const child of [relay, worker]) child?.kill('SIGTERM');
      await Promise.all([relay, worker].filter((c) => c !== undefined).map(exited));
    }
  });
});
