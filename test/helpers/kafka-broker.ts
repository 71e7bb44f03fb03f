/**
 * A real Apache Kafka broker for tests: single node, KRaft, combined broker+controller, run from the
 * official jars on Maven Central (test/kafka/pom.xml) with the machine's Java. No Kafka package
 * exists on npm or Debian, and a fake broker would not show how the project behaves against Kafka.
 *
 *   const broker = await startKafkaBroker();
 *   new Kafka({ brokers: broker.brokers });
 *   await broker.restart(); // same port, same data
 *   await broker.close();
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, rmSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, open, readFile, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { Kafka, logLevel } from 'kafkajs';

const execFileAsync = promisify(execFile);

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const POM = path.join(ROOT, 'test', 'kafka', 'pom.xml');
const CACHE_ROOT = path.join(ROOT, 'node_modules', '.cache', 'pgscore-kafka');
const MIN_JAVA = 17;
const READY_TIMEOUT_MS = 60_000;
const STOP_TIMEOUT_MS = 30_000;

export interface KafkaBroker {
  /** Bootstrap addresses for clients, e.g. ['127.0.0.1:41234']. */
  readonly brokers: string[];
  readonly dataDir: string;
  /** The broker's own log (log4j2); the JVM's stdout and stderr go to `${logFile}.out`. */
  readonly logFile: string;
  /** The JVM's process id while it runs (setpriv execs java, so it is the spawned child's), e.g. for CPU accounting. */
  readonly pid: number | undefined;
  /** Starts the broker again on the same ports and data dir; a no-op while it runs. */
  start(): Promise<void>;
  /** Clean shutdown: SIGTERM, then SIGKILL if it has not exited after 30 s. */
  stop(): Promise<void>;
  /** SIGKILL, as a crash: the next start() recovers the logs. */
  kill(): Promise<void>;
  /** stop(), then start() again on the same ports and data dir; kill() + start() is the crash version. */
  restart(): Promise<void>;
  /** Stops the broker and deletes its temp dir (and the logs, unless they went to options.logDir). */
  close(): Promise<void>;
}

export type KafkaAvailability = { ok: true } | { ok: false; reason: string };

export interface KafkaBrokerOptions {
  /** Where server.log goes; by default the broker's temp dir, which close() deletes. */
  logDir?: string;
  /** The port clients connect to (default: a free one). */
  port?: number;
  /**
   * The port the broker tells clients to use (its advertised listener), e.g. a proxy's in front of
   * it (kafka-proxy.ts); by default its own. `brokers` then names this port too.
   */
  advertisedPort?: number;
}

/** Java 17+ on PATH, and mvn too unless the jars are already in the cache. */
export async function kafkaAvailable(): Promise<KafkaAvailability> {
  let javaVersion: string;
  try {
    // `java -version` prints to stderr.
    const { stderr } = await execFileAsync('java', ['-version']);
    javaVersion = stderr;
  } catch (error) {
    return { ok: false, reason: `java is not runnable (${describeError(error)}); Kafka needs Java ${MIN_JAVA}+` };
  }
  const major = parseJavaMajor(javaVersion);
  if (major === undefined) return { ok: false, reason: `cannot read the Java version from: ${javaVersion.trim()}` };
  if (major < MIN_JAVA) return { ok: false, reason: `Java ${major} found; Kafka 4 needs Java ${MIN_JAVA}+` };

  if (await jarsPresent(await cacheDir())) return { ok: true };
  try {
    await execFileAsync('mvn', ['-v']);
  } catch (error) {
    return { ok: false, reason: `mvn is not runnable (${describeError(error)}); it fetches the Kafka jars` };
  }
  return { ok: true };
}

/** `java version "17.0.15"`, `openjdk version "21"`, or the old `"1.8.0_392"` form. */
function parseJavaMajor(text: string): number | undefined {
  const match = /version "(\d+)(?:\.(\d+))?/.exec(text);
  if (!match?.[1]) return undefined;
  const first = Number(match[1]);
  return first === 1 && match[2] ? Number(match[2]) : first;
}

let jarsPromise: Promise<string> | undefined;

/**
 * Copies the broker's jars into node_modules/.cache/pgscore-kafka/<kafka version>-<pom hash>/ with
 * Maven (which keeps its downloads in ~/.m2) and returns that dir; later calls, and later runs,
 * reuse it. Editing the pom changes the hash, so a stale set of jars is never picked up.
 */
export function ensureKafkaJars(): Promise<string> {
  jarsPromise ??= fetchJars().catch((error: unknown) => {
    jarsPromise = undefined; // let a later call try again
    throw error;
  });
  return jarsPromise;
}

async function cacheDir(): Promise<string> {
  const pom = await readFile(POM, 'utf8');
  const version = /<kafka\.version>([^<]+)<\/kafka\.version>/.exec(pom)?.[1] ?? 'unknown';
  const hash = createHash('sha256').update(pom).digest('hex').slice(0, 10);
  return path.join(CACHE_ROOT, `${version}-${hash}`);
}

async function jarsPresent(dir: string): Promise<boolean> {
  try {
    return (await readdir(dir)).some((file) => /^kafka_2\.13-.*\.jar$/.test(file));
  } catch {
    return false;
  }
}

async function fetchJars(): Promise<string> {
  const dir = await cacheDir();
  if (await jarsPresent(dir)) return dir;
  await mkdir(CACHE_ROOT, { recursive: true });
  // Copy into a private dir and rename it into place, so that test files fetching at the same time
  // (vitest runs two at once) never see a half-filled dir.
  const staging = await mkdtemp(path.join(CACHE_ROOT, '.staging-'));
  try {
    await execFileAsync(
      'mvn',
      ['-q', '-B', '-Dstyle.color=never', '-f', POM, 'dependency:copy-dependencies', `-DoutputDirectory=${staging}`],
      { maxBuffer: 64 * 1024 * 1024 },
    ).catch((error: unknown) => {
      throw new Error(`mvn could not fetch the Kafka jars: ${describeError(error)}\n${tail(processOutput(error), 40)}`);
    });
    if (!(await jarsPresent(staging))) throw new Error(`mvn ran but left no kafka_2.13 jar in ${staging}`);
    // mkdtemp made it 0700: let other users (a CI step as root, tests as someone else) read it too.
    await chmod(staging, 0o755);
    try {
      await rename(staging, dir);
    } catch (error) {
      // Another process got there first: its copy is as good as ours.
      if (!(await jarsPresent(dir))) throw error;
    }
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
  return dir;
}

/** What this process has started and not yet cleaned up, for the exit hooks below. */
const liveChildren = new Set<ChildProcess>();
const tempDirs = new Set<string>();
let exitHooked = false;

function hookProcessExit(): void {
  if (exitHooked) return;
  exitHooked = true;
  // A broker left running would hold its ports and memory after the tests. Only synchronous work is
  // possible here; the temp dirs go too, as nothing else will ever use them.
  const cleanUp = (): void => {
    for (const child of liveChildren) child.kill('SIGKILL');
    for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
  };
  process.on('exit', cleanUp);
  // A signal with no listener ends Node without running 'exit' handlers: clean up, then, unless
  // someone else handles the signal, die of it as the process would have.
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const onSignal = (): void => {
      cleanUp();
      process.removeListener(signal, onSignal);
      if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
    };
    process.on(signal, onSignal);
  }
}

/** Ports that are free now: all held at once so that they differ, then released for the broker. */
export async function freePorts(count: number): Promise<number[]> {
  const servers: Server[] = [];
  try {
    for (let i = 0; i < count; i++) {
      const server = createServer();
      servers.push(server);
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(0, '127.0.0.1', () => resolve());
      });
    }
    return servers.map((server) => (server.address() as AddressInfo).port);
  } finally {
    await Promise.all(servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))));
  }
}

/**
 * A KRaft cluster id: 16 random bytes, URL-safe base64 without padding, as `kafka-storage.sh
 * random-uuid` prints. Kafka's own generator never starts one with '-' (it would read as an option).
 */
function clusterId(): string {
  for (;;) {
    const id = randomBytes(16).toString('base64url');
    if (!id.startsWith('-')) return id;
  }
}

/**
 * Formats a fresh data dir and starts a broker on free ports. Clients reach it at `brokers`; it
 * accepts connections when this resolves.
 */
export async function startKafkaBroker(options: KafkaBrokerOptions = {}): Promise<KafkaBroker> {
  const jars = await ensureKafkaJars();
  const tempDir = await mkdtemp(path.join(tmpdir(), 'pgscore-kafka-'));
  hookProcessExit();
  tempDirs.add(tempDir);
  const dataDir = path.join(tempDir, 'data');
  const logDir = options.logDir ?? tempDir;
  await mkdir(logDir, { recursive: true });
  const logFile = path.join(logDir, 'server.log');
  const [freePort, controllerPort] = (await freePorts(2)) as [number, number];
  const port = options.port ?? freePort;
  const advertisedPort = options.advertisedPort ?? port;

  const propertiesFile = path.join(tempDir, 'server.properties');
  await writeFile(
    propertiesFile,
    [
      'process.roles=broker,controller',
      'node.id=1',
      // Kafka 4's dynamic quorum: the voter set is written by `format --standalone`.
      `controller.quorum.bootstrap.servers=127.0.0.1:${controllerPort}`,
      `listeners=PLAINTEXT://127.0.0.1:${port},CONTROLLER://127.0.0.1:${controllerPort}`,
      `advertised.listeners=PLAINTEXT://127.0.0.1:${advertisedPort},CONTROLLER://127.0.0.1:${controllerPort}`,
      'controller.listener.names=CONTROLLER',
      'inter.broker.listener.name=PLAINTEXT',
      'listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT',
      `log.dirs=${dataDir}`,
      // One node: every internal topic must make do with one replica.
      'offsets.topic.replication.factor=1',
      'offsets.topic.num.partitions=4',
      'transaction.state.log.replication.factor=1',
      'transaction.state.log.min.isr=1',
      'transaction.state.log.num.partitions=4',
      'share.coordinator.state.topic.replication.factor=1',
      'share.coordinator.state.topic.min.isr=1',
      // Consumers join a group at once instead of waiting 3 s for others.
      'group.initial.rebalance.delay.ms=0',
      'num.partitions=1',
      // Tests create their topics explicitly, so a typo fails instead of making a new topic.
      'auto.create.topics.enable=false',
      // After kill() the controller keeps the dead incarnation's registration until its session times
      // out (9 s by default), and the new one cannot register before: shorter sessions, quicker starts.
      'broker.session.timeout.ms=3000',
      'broker.heartbeat.interval.ms=500',
      // Small segments keep the data dir small and log recovery after kill() quick.
      'log.segment.bytes=8388608',
      'log.retention.check.interval.ms=60000',
      // Fewer threads than the defaults: the test machines have two cores.
      'num.network.threads=2',
      'num.io.threads=2',
      'num.recovery.threads.per.data.dir=1',
      '',
    ].join('\n'),
  );

  const log4jFile = path.join(tempDir, 'log4j2.xml');
  await writeFile(
    log4jFile,
    `<?xml version="1.0" encoding="UTF-8"?>
<!-- Everything into one file, nothing on the console: the test output stays clean. -->
<Configuration status="WARN">
  <Appenders>
    <File name="file" fileName="${escapeXml(logFile)}" append="true">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
    </File>
  </Appenders>
  <Loggers>
    <Logger name="kafka.request.logger" level="WARN"/>
    <Root level="INFO"><AppenderRef ref="file"/></Root>
  </Loggers>
</Configuration>
`,
  );

  const javaOptions = [
    '-Xms64m',
    '-Xmx512m',
    // Start-up time matters more than peak throughput here, and the machines have two cores.
    '-XX:+UseSerialGC',
    '-XX:TieredStopAtLevel=1',
    '-Djava.awt.headless=true',
    `-Dlog4j2.configurationFile=${log4jFile}`,
    '-cp',
    path.join(jars, '*'),
  ];
  const outFile = `${logFile}.out`;

  const format = await runToFile(
    'java',
    [...javaOptions, 'kafka.tools.StorageTool', 'format', '--standalone', '-t', clusterId(), '-c', propertiesFile],
    outFile,
  );
  if (format !== 0) {
    const message = `kafka storage format exited with ${format}:\n${await tailOf(outFile)}\n${await tailOf(logFile)}`;
    await rm(tempDir, { recursive: true, force: true });
    tempDirs.delete(tempDir);
    throw new Error(message);
  }

  const brokers = [`127.0.0.1:${advertisedPort}`];
  /** The current JVM, from spawn until its exit (or spawn failure) has been seen. */
  let current: { child: ChildProcess; exited: Promise<void>; ended?: string } | undefined;

  async function start(): Promise<void> {
    if (current) return;
    const out = await open(outFile, 'a');
    const [command, args] = withParentDeathSignal('java', [...javaOptions, 'kafka.Kafka', propertiesFile]);
    let child: ChildProcess;
    try {
      // stdout/stderr straight into a file: nothing reaches the test output, and no pipe to drain.
      child = spawn(command, args, { stdio: ['ignore', out.fd, out.fd], cwd: tempDir });
    } finally {
      await out.close();
    }
    liveChildren.add(child);
    const state: { child: ChildProcess; exited: Promise<void>; ended?: string } = {
      child,
      exited: new Promise<void>((resolve) => {
        const ended = (why: string): void => {
          state.ended ??= why;
          liveChildren.delete(child);
          if (current === state) current = undefined;
          resolve();
        };
        child.once('exit', (code, signal) => ended(`exited (${signal ?? `code ${code}`})`));
        child.once('error', (error) => ended(`could not be started (${error.message})`));
      }),
    };
    current = state;
    try {
      await waitUntilReady(brokers, () => state.ended);
    } catch (error) {
      await stopChild('SIGKILL');
      throw new Error(
        `${describeError(error)}\n--- ${logFile} (tail) ---\n${await tailOf(logFile)}\n--- ${outFile} (tail) ---\n${await tailOf(outFile)}`,
      );
    }
  }

  async function stopChild(signal: 'SIGTERM' | 'SIGKILL'): Promise<void> {
    const state = current;
    if (!state) return;
    state.child.kill(signal);
    let timer: NodeJS.Timeout | undefined;
    const timedOut = await Promise.race([
      state.exited.then(() => false),
      new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(true), STOP_TIMEOUT_MS);
      }),
    ]);
    clearTimeout(timer);
    if (timedOut) {
      state.child.kill('SIGKILL');
      await state.exited;
    }
  }

  const broker: KafkaBroker = {
    brokers,
    dataDir,
    logFile,
    get pid() {
      return current?.child.pid;
    },
    start,
    stop: () => stopChild('SIGTERM'),
    kill: () => stopChild('SIGKILL'),
    async restart() {
      await stopChild('SIGTERM');
      await start();
    },
    async close() {
      await stopChild('SIGTERM');
      await rm(tempDir, { recursive: true, force: true });
      tempDirs.delete(tempDir);
    },
  };

  try {
    await start();
  } catch (error) {
    await rm(tempDir, { recursive: true, force: true });
    tempDirs.delete(tempDir);
    throw error;
  }
  return broker;
}

/**
 * Polls until the broker answers a metadata request. `whyNot` reports a dead process, so that a broker
 * that failed to start fails at once rather than after the timeout.
 */
async function waitUntilReady(brokers: string[], whyNot: () => string | undefined): Promise<void> {
  const kafka = new Kafka({
    clientId: 'pgscore-test-ready',
    brokers,
    logLevel: logLevel.NOTHING,
    connectionTimeout: 1_000,
    requestTimeout: 2_000,
    retry: { retries: 0 },
  });
  const deadline = Date.now() + READY_TIMEOUT_MS;
  let lastError = 'no attempt';
  while (Date.now() < deadline) {
    const dead = whyNot();
    if (dead) throw new Error(`the Kafka broker ${dead} before it accepted connections`);
    const admin = kafka.admin();
    try {
      await admin.connect();
      await admin.listTopics();
      return;
    } catch (error) {
      lastError = describeError(error);
    } finally {
      await admin.disconnect().catch(() => undefined);
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  throw new Error(`the Kafka broker at ${brokers.join(',')} did not accept connections within ${READY_TIMEOUT_MS} ms (last error: ${lastError})`);
}

/**
 * Asks Linux to SIGKILL the broker when the process that started it dies, even by SIGKILL, when no
 * exit handler runs (a vitest worker killed on a timeout, say). setpriv is in util-linux.
 */
function withParentDeathSignal(command: string, args: string[]): [string, string[]] {
  if (process.platform === 'linux' && existsSync('/usr/bin/setpriv')) {
    return ['/usr/bin/setpriv', ['--pdeathsig', 'KILL', '--', command, ...args]];
  }
  return [command, args];
}

/** Runs a command to its end with its output appended to a file; resolves with its exit code. */
async function runToFile(command: string, args: string[], file: string): Promise<number> {
  const out = await open(file, 'a');
  try {
    return await new Promise<number>((resolve, reject) => {
      const child = spawn(command, args, { stdio: ['ignore', out.fd, out.fd] });
      child.once('error', reject);
      child.once('exit', (code, signal) => resolve(code ?? (signal ? 128 : 1)));
    });
  } finally {
    await out.close();
  }
}

async function tailOf(file: string, lines = 40): Promise<string> {
  try {
    return tail(await readFile(file, 'utf8'), lines);
  } catch {
    return `(no ${path.basename(file)})`;
  }
}

function tail(text: string, lines: number): string {
  return text.trimEnd().split('\n').slice(-lines).join('\n');
}

/** What a failed execFile printed: its error carries stdout and stderr. */
function processOutput(error: unknown): string {
  if (typeof error !== 'object' || error === null) return '';
  const { stdout, stderr } = error as { stdout?: unknown; stderr?: unknown };
  return `${typeof stdout === 'string' ? stdout : ''}${typeof stderr === 'string' ? stderr : ''}`;
}

function describeError(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function escapeXml(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}
