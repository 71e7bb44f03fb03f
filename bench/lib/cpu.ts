/**
 * CPU time of processes and process trees from /proc (Linux), for CPU-seconds per row.
 *
 * A tree's time is every live member's utime+stime plus cutime+cstime (what its children that
 * have exited and been waited for used). Sampled before and after a drain, the difference counts
 * a Postgres backend that came or went in between exactly once: a backend that exits moves its
 * whole time from "live member" into the postmaster's cutime.
 */
import { execFile } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import pg from 'pg';

interface ProcStat {
  readonly pid: number;
  readonly ppid: number;
  /** utime + stime, in clock ticks. */
  readonly own: number;
  /** cutime + cstime: waited-for children, in clock ticks. */
  readonly children: number;
}

let ticksPerSecond: Promise<number> | undefined;

/** sysconf(_SC_CLK_TCK): 100 on every Linux we know, asked anyway. */
function clockTicks(): Promise<number> {
  ticksPerSecond ??= promisify(execFile)('getconf', ['CLK_TCK']).then(
    ({ stdout }) => Number(stdout.trim()) || 100,
    () => 100,
  );
  return ticksPerSecond;
}

/** /proc/<pid>/stat; the command name is in parentheses and may hold spaces, so fields count from the last ')'. */
function parseStat(pid: number, text: string): ProcStat | undefined {
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // fields[0] is field 3 (state): ppid is field 4, utime..cstime are fields 14..17.
  const n = (field: number) => Number(fields[field - 3]);
  const stat = { pid, ppid: n(4), own: n(14) + n(15), children: n(16) + n(17) };
  return Number.isFinite(stat.own) && Number.isFinite(stat.children) ? stat : undefined;
}

async function readStat(pid: number): Promise<ProcStat | undefined> {
  const text = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
  return text === undefined ? undefined : parseStat(pid, text);
}

async function allStats(): Promise<ProcStat[]> {
  const pids = (await readdir('/proc')).filter((name) => /^\d+$/.test(name)).map(Number);
  const stats = await Promise.all(pids.map(readStat));
  return stats.filter((s): s is ProcStat => s !== undefined);
}

/** CPU-seconds used so far by a process and all its descendants (see the file comment); undefined once it is gone. */
export async function treeCpuSeconds(root: number, stats?: readonly ProcStat[]): Promise<number | undefined> {
  const all = stats ?? (await allStats());
  const byParent = new Map<number, ProcStat[]>();
  for (const s of all) {
    const siblings = byParent.get(s.ppid);
    if (siblings) siblings.push(s);
    else byParent.set(s.ppid, [s]);
  }
  const top = all.find((s) => s.pid === root);
  if (!top) return undefined;
  let ticks = 0;
  const pending = [top];
  while (pending.length > 0) {
    const s = pending.pop()!;
    ticks += s.own + s.children;
    pending.push(...(byParent.get(s.pid) ?? []));
  }
  return ticks / (await clockTicks());
}

/** Named process trees, sampled together: one pass over /proc for all of them. */
export async function sampleCpu(roots: ReadonlyMap<string, number>): Promise<Map<string, number | undefined>> {
  const stats = await allStats();
  const out = new Map<string, number | undefined>();
  for (const [name, pid] of roots) out.set(name, await treeCpuSeconds(pid, stats));
  return out;
}

/** CPU-seconds the whole machine (all cores) has spent busy and waiting for I/O since boot, from /proc/stat. */
export async function machineCpuSeconds(): Promise<{ busy: number; iowait: number }> {
  const line = (await readFile('/proc/stat', 'utf8')).split('\n')[0]!;
  // cpu user nice system idle iowait irq softirq steal (guest time is inside user)
  const [user, nice, system, , iowait, irq, softirq, steal] = line.trim().split(/\s+/).slice(1).map(Number) as number[];
  const ticks = await clockTicks();
  return { busy: (user! + nice! + system! + irq! + softirq! + (steal ?? 0)) / ticks, iowait: iowait! / ticks };
}

export type PostmasterLookup = { ok: true; pid: number } | { ok: false; reason: string };

/**
 * The postmaster of the server at `adminUrl`, when it runs on this machine and we may read its
 * data directory: the pid in postmaster.pid, if that file names the server's port and the process
 * is a live postgres. `pg_backend_pid()` alone would name one backend, not the server.
 */
export async function findPostmaster(adminUrl: string): Promise<PostmasterLookup> {
  const client = new pg.Client({ connectionString: adminUrl });
  await client.connect();
  let dataDir: string;
  let port: string;
  try {
    dataDir = (await client.query<{ data_directory: string }>('SHOW data_directory')).rows[0]!.data_directory;
    port = (await client.query<{ port: string }>('SHOW port')).rows[0]!.port;
  } catch (error) {
    return { ok: false, reason: `cannot read the server's data directory (${(error as Error).message})` };
  } finally {
    await client.end();
  }
  const file = await readFile(`${dataDir}/postmaster.pid`, 'utf8').catch(() => undefined);
  if (file === undefined) return { ok: false, reason: `${dataDir}/postmaster.pid is not readable here (the server runs elsewhere, or as another user)` };
  // postmaster.pid: pid, data directory, start time, port, … one per line.
  const [pidLine, , , portLine] = file.split('\n');
  const pid = Number(pidLine);
  if (!Number.isInteger(pid) || portLine?.trim() !== port) return { ok: false, reason: `${dataDir}/postmaster.pid names another server than the one on port ${port}` };
  const comm = await readFile(`/proc/${pid}/comm`, 'utf8').catch(() => '');
  if (!/^(postgres|postmaster)/.test(comm.trim())) return { ok: false, reason: `process ${pid} from postmaster.pid is not a postgres here (another namespace?)` };
  return { ok: true, pid };
}
