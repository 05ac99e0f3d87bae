// What bench/10-wocker.ts reads from /proc, beyond lib/proc.ts's PIDs, argv,
// parents and start times: a process's status lines and its PSS, the host's
// MemAvailable, start times on our clocks, the wocker
// shims told apart by their argv, and the memory of a jail's processes (or
// of an idle pool slot's) added up by kind.
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { performance } from 'node:perf_hooks';
import { clockTicks, cmdline, descendantsOf, parentOf, processStart } from '../lib/proc.ts';
import { JAIL_ID } from '../steps/10-wocker/api.ts';
import type { ShimState } from '../steps/10-wocker/records.ts';

export const tryOr = <T>(f: () => T, or: T): T => {
  try {
    return f();
  } catch {
    return or;
  }
};
export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** For 'exit' listeners, which cannot await: Atomics.wait blocks the thread without spinning. */
export const sleepSync = (ms: number) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
export const mib = (kib: number) => `${(kib / 1024).toFixed(1)} MiB`;

// --- a line of /proc/PID/status, Pss of smaps_rollup, MemAvailable

export const statusText = (pid: number, field: string) => tryOr(() => new RegExp(`^${field}:\\s*(.*)$`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1], undefined);
/** "VmRSS:  51200 kB" -> 51200; undefined once the process is gone. */
export const statusKiB = (pid: number, field: string) => {
  const v = statusText(pid, field);
  return v === undefined ? undefined : parseInt(v, 10);
};
/** Proportional set size: each shared page divided among the processes that map it (smaps_rollup: one read, not one per mapping). */
export const pssKiB = (pid: number) => tryOr(() => Number(/^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'))?.[1] ?? 0), 0);
export const memAvailableKiB = () => Number(/^MemAvailable:\s+(\d+)/m.exec(readFileSync('/proc/meminfo', 'utf8'))![1]);
/** Gone, or a zombie not reaped yet (a synchronous wait does not let Node reap its children). */
export const gone = (pid: number) => (statusText(pid, 'State') ?? 'Z').startsWith('Z');

// --- clocks: /proc's start times on our scales

/** Start times in /proc/PID/stat count clock ticks since boot: CLK_TCK of them a second. */
export const CLK_TCK = clockTicks();
/** A jail came from the pool if its init was already running when its POST was sent. */
export const startedBefore = (pid: number | undefined, tick: number) => {
  const t = pid === undefined ? undefined : processStart(pid);
  return t !== undefined && t < tick;
};
/** performance.now() counts from our start on the monotonic clock, which (no suspend on a bench host) keeps pace with boot time. */
const monoOffset = Number(process.hrtime.bigint()) / 1e6 - performance.now();
/** A process's start on performance.now()'s scale, mid-tick: ±5 ms at CLK_TCK 100. */
export const startedAt = (pid: number | undefined) => {
  const t = pid === undefined ? undefined : processStart(pid);
  return t === undefined ? undefined : ((t + 0.5) * 1000) / CLK_TCK - monoOffset;
};

// --- the wocker shims, by their argv

/** What a shim was started for: its jail's id; a pool slot also names its log (under $JAIL_HOME/run/wocker/pool). */
export interface ShimArgv {
  id: string;
  slotLog?: string;
}

/** `node [flags] …shim… ID` (cold), or `node [flags] …shim… --pool LOG ID` (a slot); undefined for any other process. */
export function shimArgv(pid: number): ShimArgv | undefined {
  const argv = cmdline(pid) ?? [];
  const at = argv.findIndex((a, i) => i > 0 && !a.startsWith('-') && basename(a).includes('shim'));
  const rest = at > 0 ? argv.slice(at + 1) : [];
  if (rest.length === 1 && JAIL_ID.test(rest[0]!)) return { id: rest[0]! };
  if (rest.length === 3 && rest[0] === '--pool' && JAIL_ID.test(rest[2]!)) return { id: rest[2]!, slotLog: rest[1]! };
  return undefined;
}

// --- memory, by kind of process

export interface Weight {
  rss: number;
  pss: number;
  anon: number;
  n: number;
}
export type Weights = Map<string, Weight>;

function weigh(into: Weights, pids: number[], kindOf: (pid: number) => string): void {
  for (const pid of pids) {
    const kind = kindOf(pid);
    const k = into.get(kind) ?? { rss: 0, pss: 0, anon: 0, n: 0 };
    into.set(kind, { rss: k.rss + (statusKiB(pid, 'VmRSS') ?? 0), pss: k.pss + pssKiB(pid), anon: k.anon + (statusKiB(pid, 'RssAnon') ?? 0), n: k.n + 1 });
  }
}

/** Each running jail's processes: its shim and everything under it (unshare, the init, the target). */
export function jailMemory(states: ShimState[]): Weights {
  const byKind: Weights = new Map();
  for (const s of states) {
    weigh(byKind, [s.shimPid, ...descendantsOf(s.shimPid)], (pid) => (pid === s.shimPid ? 'shim (node)' : pid === s.initPid ? 'init (node, PID 1)' : (statusText(pid, 'Name') ?? '?')));
  }
  return byKind;
}

/**
 * Each idle slot's processes. Its shim has two children: setpriv, which
 * became unshare (exec), whose child is the waiting init; and nsenter,
 * which became the idmap helper's node once in the init's mount namespace
 * (nsenter without --pid does not fork).
 */
export function slotMemory(shims: number[]): Weights {
  const byKind: Weights = new Map();
  for (const shim of shims) {
    weigh(byKind, [shim, ...descendantsOf(shim)], (pid) => {
      if (pid === shim) return 'shim (node, --pool)';
      const name = statusText(pid, 'Name') ?? '?';
      if (parentOf(pid) === shim) return ['node', 'nsenter'].includes(name) ? 'idmap helper (node)' : name;
      return parentOf(parentOf(pid) ?? 0) === shim && name === 'node' ? 'init (node, waiting)' : name;
    });
  }
  return byKind;
}

/** One line per kind, averaged over its processes, then the sum over `per` jails (or slots). */
export function printWeights(byKind: Weights, per: number, unit: string): Weight {
  const sum = { rss: 0, pss: 0, anon: 0, n: 0 };
  for (const [kind, m] of [...byKind].sort((a, b) => b[1].rss - a[1].rss)) {
    for (const k of ['rss', 'pss', 'anon', 'n'] as const) sum[k] += m[k];
    console.log(`  ${kind.padEnd(22)} ${String(m.n).padStart(4)} processes  RSS ${mib(m.rss / m.n).padStart(9)}  PSS ${mib(m.pss / m.n).padStart(9)}  RssAnon ${mib(m.anon / m.n).padStart(9)}`);
  }
  const n = Math.max(1, per);
  console.log(`  per ${unit}: ${(sum.n / n).toFixed(0)} processes, RSS ${mib(sum.rss / n)}, PSS ${mib(sum.pss / n)}, RssAnon ${mib(sum.anon / n)}`);
  return sum;
}
