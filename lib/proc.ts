// Reading /proc: which processes exist, what they run, when they started.
// A PID alone can be reused; a PID and its start time name one process.
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

/** Every PID in this PID namespace's /proc. */
export function listPids(): number[] {
  return readdirSync('/proc').filter((p) => /^\d+$/.test(p)).map(Number);
}

/** argv of a process, or undefined if it is gone (or a kernel thread). */
export function cmdline(pid: number): string[] | undefined {
  try {
    const raw = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    return raw ? raw.replace(/\0$/, '').split('\0') : undefined;
  } catch {
    return undefined;
  }
}

/** Field 22 of /proc/PID/stat: when the process started, in clock ticks since boot. */
export function processStart(pid: number): number | undefined {
  const f = statFields(pid);
  return f ? Number(f[19]) : undefined;
}

let ticksPerSecond: number | undefined;
/** CLK_TCK, the clock ticks a second that processStart counts in (asked once, not assumed: 100 on most Linux). */
export function clockTicks(): number {
  return (ticksPerSecond ??= Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' })) || 100);
}

/**
 * Now, in processStart's ticks, truncated: /proc/uptime reads the same
 * boot-time clock, to 10 ms. A process whose start is below it started
 * before this moment, whatever the rounding.
 */
export const ticksNow = (): number => Math.floor(Number(readFileSync('/proc/uptime', 'utf8').split(' ')[0]) * clockTicks());

/** The fields of /proc/PID/stat after the command name, which may hold spaces and parentheses: counted from the last ')'. */
function statFields(pid: number): string[] | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  } catch {
    return undefined;
  }
}

/** Field 4 of /proc/PID/stat: the parent's PID, or undefined if the process is gone. */
export function parentOf(pid: number): number | undefined {
  const f = statFields(pid);
  return f ? Number(f[1]) : undefined;
}

/** The PIDs whose parent is `pid`. */
export function childrenOf(pid: number): number[] {
  return listPids().filter((p) => parentOf(p) === pid);
}

/** Every descendant of `pid`, children before grandchildren, from one scan of /proc. */
export function descendantsOf(pid: number): number[] {
  const kids = new Map<number, number[]>();
  for (const p of listPids()) {
    const parent = parentOf(p);
    if (parent !== undefined) kids.set(parent, [...(kids.get(parent) ?? []), p]);
  }
  const out: number[] = [];
  for (let i = 0, queue = [pid]; i < queue.length; i++) {
    for (const child of kids.get(queue[i]!) ?? []) {
      out.push(child);
      queue.push(child);
    }
  }
  return out;
}
