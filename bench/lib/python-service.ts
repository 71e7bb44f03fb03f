/**
 * The FastAPI contender of scenario 11 (bench/python/service.py): a venv with its pinned
 * requirements, kept in a cache directory between runs, and uvicorn started on a free port.
 * Python is a bench-only dependency: when it cannot be had, callers skip the contender with
 * the reason given here; nothing in this file throws for a missing Python.
 */
import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { homedir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { restClient, type RestService } from './rest.js';
import { sleep } from './stats.js';

const PYTHON_DIR = fileURLToPath(new URL('../python/', import.meta.url));
const REQUIREMENTS = path.join(PYTHON_DIR, 'requirements.txt');

export type PythonSetup = { ok: true; python: string; note: string } | { ok: false; reason: string };

interface Run {
  readonly ok: boolean;
  readonly out: string;
}

function run(file: string, args: readonly string[], timeoutMs: number): Promise<Run> {
  return new Promise((resolve) => {
    execFile(file, args, { timeout: timeoutMs, maxBuffer: 16 * 2 ** 20, env: { ...process.env, PIP_DISABLE_PIP_VERSION_CHECK: '1', PIP_NO_INPUT: '1' } }, (error, stdout, stderr) =>
      resolve({ ok: !error, out: `${stdout}${stderr}`.trim() || (error?.message ?? '') }),
    );
  });
}

/** The end of a tool's output on one line, for a note. */
const lastLine = (text: string) => text.replace(/\s+/g, ' ').trim().slice(-300) || '(no output)';

function cacheDir(): string {
  return path.join(process.env.XDG_CACHE_HOME || path.join(homedir(), '.cache'), 'pgscore-bench');
}

/**
 * Debian ships the venv module's ensurepip in a package of its own (python3-venv), and CI's
 * fresh machine may lack it, or python3 altogether. Only there (root, CI=true) is it installed.
 */
async function installVenvPackage(progress: (m: string) => void): Promise<string | undefined> {
  if (process.getuid?.() !== 0 || process.env.CI !== 'true') return undefined;
  progress('python: apt-get install python3-venv (root, CI=true)');
  const update = await run('apt-get', ['update', '-q'], 300_000);
  if (!update.ok) return `apt-get update failed: ${lastLine(update.out)}`;
  const install = await run('apt-get', ['install', '-y', '-q', '--no-install-recommends', 'python3-venv'], 600_000);
  return install.ok ? 'installed python3-venv with apt-get' : `apt-get install python3-venv failed: ${lastLine(install.out)}`;
}

async function createVenv(dir: string): Promise<Run> {
  await rm(dir, { recursive: true, force: true });
  return run('python3', ['-m', 'venv', dir], 120_000);
}

/**
 * A venv with bench/python/requirements.txt in ~/.cache/pgscore-bench/venv (or under
 * XDG_CACHE_HOME), reused while the requirements and the interpreter are those it was built
 * with (their hash is stored beside it, written only once pip succeeded).
 */
export async function preparePythonVenv(progress: (m: string) => void): Promise<PythonSetup> {
  const notes: string[] = [];
  let version = await run('python3', ['--version'], 30_000);
  let hasVenv = version.ok && (await run('python3', ['-m', 'venv', '--help'], 30_000)).ok;
  if (!hasVenv) {
    const installed = await installVenvPackage(progress);
    if (installed === undefined) return { ok: false, reason: version.ok ? 'python3 has no venv module (Debian: apt-get install python3-venv)' : 'python3 is not installed' };
    notes.push(installed);
    version = await run('python3', ['--version'], 30_000);
    hasVenv = version.ok && (await run('python3', ['-m', 'venv', '--help'], 30_000)).ok;
    if (!hasVenv) return { ok: false, reason: `${installed}; python3 -m venv still unavailable` };
  }
  const requirements = await readFile(REQUIREMENTS, 'utf8');
  const where = await run('python3', ['-c', 'import sys; print(sys.executable)'], 30_000);
  const stamp = createHash('sha256').update(requirements).update(version.out).update(where.out).digest('hex');
  const dir = path.join(cacheDir(), 'venv');
  const python = path.join(dir, 'bin', 'python');
  const stampFile = path.join(dir, '.requirements-sha256');
  const cached = existsSync(python) && (await readFile(stampFile, 'utf8').catch(() => '')) === stamp;
  if (cached) return { ok: true, python, note: `${version.out}, venv reused from ${dir}` };

  progress(`python: creating a venv in ${dir} (${version.out})`);
  await mkdir(cacheDir(), { recursive: true });
  let created = await createVenv(dir);
  if (!created.ok) {
    // `python3 -m venv` exists but fails without ensurepip (Debian without python3-venv).
    const installed = await installVenvPackage(progress);
    if (installed === undefined) return { ok: false, reason: `python3 -m venv failed: ${lastLine(created.out)}` };
    notes.push(installed);
    created = await createVenv(dir);
    if (!created.ok) return { ok: false, reason: `${installed}; python3 -m venv still failed: ${lastLine(created.out)}` };
  }
  progress('python: pip install -r bench/python/requirements.txt');
  const pip = await run(python, ['-m', 'pip', 'install', '-q', '-r', REQUIREMENTS], 900_000);
  if (!pip.ok) return { ok: false, reason: `pip install -r bench/python/requirements.txt failed: ${lastLine(pip.out)}` };
  const check = await run(python, ['-c', 'import fastapi, uvicorn, onnxruntime, numpy'], 60_000);
  if (!check.ok) return { ok: false, reason: `the venv's packages do not import: ${lastLine(check.out)}` };
  await writeFile(stampFile, stamp);
  return { ok: true, python, note: [...notes, `${version.out}, venv built in ${dir}`].join('; ') };
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  await new Promise((resolve) => server.close(resolve));
  if (!address || typeof address === 'string') throw new Error('no free port');
  return address.port;
}

/**
 * uvicorn with bench/python/service.py on a free port (one worker process, uvloop + httptools,
 * no access log), ready once GET /health answers.
 */
export async function startPythonService(python: string, modelPath: string): Promise<RestService> {
  const port = await freePort();
  const child = spawn(
    python,
    ['-m', 'uvicorn', 'service:app', '--host', '127.0.0.1', '--port', String(port), '--workers', '1', '--loop', 'uvloop', '--http', 'httptools', '--no-access-log', '--log-level', 'warning'],
    { cwd: PYTHON_DIR, env: { ...process.env, PGSCORE_BENCH_MODEL: modelPath, PYTHONDONTWRITEBYTECODE: '1' }, stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let err = '';
  let exited: number | null | undefined;
  child.stderr!.on('data', (c: Buffer) => (err = (err + c.toString()).slice(-20_000)));
  const gone = new Promise<void>((resolve) => child.once('exit', (code) => ((exited = code), resolve())));
  const stop = async () => {
    if (exited !== undefined) return;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await gone;
    clearTimeout(timer);
  };
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (exited !== undefined) throw new Error(`uvicorn exited with ${exited}: ${lastLine(err)}`);
    const health = await fetch(`http://127.0.0.1:${port}/health`).catch(() => undefined);
    if (health?.ok) break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`uvicorn did not answer on port ${port} within 60 s: ${lastLine(err)}`);
    }
    await sleep(100);
  }
  const client = restClient(port, 4);
  return {
    port,
    predict: client.predict,
    async stop() {
      client.close();
      await stop();
    },
  };
}
