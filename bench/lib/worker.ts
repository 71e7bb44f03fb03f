import { spawn, type ChildProcess } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { loadConfig } from '../../src/config.js';
import type { Worker } from '../../src/worker/worker.js';

type WorkerSettings = ConstructorParameters<typeof Worker>[1];

/**
 * The worker's defaults, from the one configuration schema (README "Configuration"). The bench
 * owns its throwaway databases and connects as their superuser, so it allows that explicitly.
 */
export const WORKER_DEFAULTS: WorkerSettings = loadConfig({ PGSCORE_ALLOW_SUPERUSER: 'true' });

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

export interface Child {
  readonly process: ChildProcess;
  readonly pid: number;
  /** Resolves when the child logged `ready` (e.g. "worker ready"). */
  ready: Promise<void>;
  stop(): Promise<void>;
  stderr(): string;
}

/** `node bin/pgscore.js <args>` as a child process with its own event loop; ready when it logs `readyText`. */
export function spawnPgscore(args: string[], env: Record<string, string>, readyText: string): Child {
  const child = spawn(process.execPath, ['bin/pgscore.js', ...args], {
    cwd: ROOT,
    env: { ...process.env, PGSCORE_LOG_LEVEL: 'info', PGSCORE_ALLOW_SUPERUSER: 'true', ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let err = '';
  let exited = false;
  const ready = new Promise<void>((resolve, reject) => {
    child.stderr!.on('data', (chunk: Buffer) => {
      err += chunk.toString();
      if (err.length > 200_000) err = err.slice(-100_000);
      if (err.includes(readyText)) resolve();
    });
    child.on('exit', (code) => {
      exited = true;
      reject(new Error(`pgscore ${args.join(' ')} exited with ${code} before it was ready:\n${err.slice(-3000)}`));
    });
  });
  ready.catch(() => undefined);
  return {
    process: child,
    pid: child.pid!,
    ready,
    stderr: () => err,
    async stop() {
      if (exited) return;
      const gone = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
      await gone;
      clearTimeout(timer);
    },
  };
}

/** Resident set size of a process in MiB, from /proc/<pid>/status (VmRSS). */
export async function rssMiB(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const match = /VmRSS:\s+(\d+) kB/.exec(status);
  if (!match) throw new Error(`no VmRSS for ${pid}`);
  return Number(match[1]) / 1024;
}
