import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const BIN = fileURLToPath(new URL('../../bin/pgscore.js', import.meta.url));

export interface CliResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs `pgscore <args>` to completion, as a user would. */
export function pgscore(args: readonly string[], env: Record<string, string> = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, ...env } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

export type RunningPgscore = ChildProcess & { output(): string };

/** Long-running pgscore processes of this test file that have not exited yet. */
const running = new Set<ChildProcess>();

/**
 * Starts a long-running `pgscore <args>` (worker, up); the caller stops or kills it, and
 * stopStrayProcesses() (after each file, test/helpers/setup-processes.ts) ends what it did not.
 * Each runs in a process group of its own, as a terminal's foreground job would, and holds an
 * IPC channel to this process: if the test runner dies, pgscore sees the channel close and stops.
 */
export function startPgscore(args: readonly string[], env: Record<string, string> = {}): RunningPgscore {
  const child = spawn(process.execPath, [BIN, ...args], {
    env: { ...process.env, ...env },
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
  });
  running.add(child);
  child.once('exit', () => running.delete(child));
  // The channel is for pgscore to notice this process dying; it must not keep this one alive.
  child.channel?.unref();
  let output = '';
  child.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  return Object.assign(child, { output: () => output });
}

export function exited(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve) => child.once('exit', (code) => resolve(code)));
}

/** Sends a signal to a child's whole process group (what Ctrl-C in a terminal does to its job). */
export function signalGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  try {
    if (child.pid !== undefined) process.kill(-child.pid, signal);
  } catch {
    // The group is gone already.
  }
}

/**
 * Ends every pgscore process a test started and left running (a test that failed before its
 * own kill): SIGTERM to its group, which stops an `up` with its Postgres, then SIGKILL after
 * `graceMs` (an `up`'s Postgres then stops on its own, its watchdog seeing pgscore gone).
 */
export async function stopStrayProcesses(graceMs = 15_000): Promise<number> {
  const strays = [...running];
  for (const child of strays) signalGroup(child, 'SIGTERM');
  await Promise.all(
    strays.map(async (child) => {
      const late = setTimeout(() => signalGroup(child, 'SIGKILL'), graceMs);
      await exited(child);
      clearTimeout(late);
    }),
  );
  return strays.length;
}

/** At exit nothing can be awaited: SIGKILL whatever is left. */
export function killStrayProcesses(): void {
  for (const child of running) signalGroup(child, 'SIGKILL');
}
