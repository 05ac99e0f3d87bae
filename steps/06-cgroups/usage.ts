// What the jail used. The kernel counts everything a cgroup does in its own
// files, so the report is a `cat`: CPU time and throttled periods (cpu.stat),
// the memory high-water mark and the OOM kills (memory.peak, memory.events),
// the most tasks at once and the refused forks (pids.peak, pids.events).
// v1 spells most of them differently; cgroupStats reads both.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { JailError } from '../../lib/errors.ts';
import { explain, heading, showCommand, warn } from '../../lib/output.ts';
import { readKeyed, readNumber, readText, WORKSHOP_CGROUP } from './cgroupfs.ts';
import { formatBytes } from './flags.ts';
import { detectCgroups, leafDir, workshopDir, type Controller, type JailCgroup } from './hierarchy.ts';
import type { Limits } from './limits.ts';

export interface CgroupStats {
  /** CPU time of every process in the jail, user and system, in microseconds. */
  cpuUsec?: number;
  /** 100 ms periods in which the jail wanted CPU, how many ended in throttling, and the time spent waiting. */
  periods: number;
  throttled: number;
  throttledUsec: number;
  memoryBytes: number;
  /** The high-water mark of memory (memory.peak, v1 memory.max_usage_in_bytes). */
  memoryPeakBytes?: number;
  /** Processes the kernel OOM-killed because the jail hit its memory limit. */
  oomKills: number;
  pids: number;
  /** The most tasks at once (pids.peak: Linux 6.1+ on v2, 6.x on v1). */
  pidsPeak?: number;
  /** How often fork() or clone() failed because of pids.max. */
  forksRefused: number;
}

export function cgroupStats(name: string): CgroupStats {
  const tree = detectCgroups();
  const file = (c: Controller, f: string) => (tree.roots[c] ? join(workshopDir(tree, c), name, f) : '');
  if (!existsSync(file('memory', 'cgroup.procs'))) throw new JailError(`there is no cgroup for a jail named ${name}`, 'its cgroup exists only while the jail runs');
  const pids = {
    pids: readNumber(file('pids', 'pids.current')) ?? 0,
    pidsPeak: readNumber(file('pids', 'pids.peak')),
    forksRefused: readKeyed(file('pids', 'pids.events')).get('max') ?? 0,
  };
  const cpu = readKeyed(file('cpu', 'cpu.stat'));
  if (tree.version === 2) {
    return {
      cpuUsec: cpu.get('usage_usec'),
      periods: cpu.get('nr_periods') ?? 0,
      throttled: cpu.get('nr_throttled') ?? 0,
      throttledUsec: cpu.get('throttled_usec') ?? 0,
      memoryBytes: readNumber(file('memory', 'memory.current')) ?? 0,
      memoryPeakBytes: readNumber(file('memory', 'memory.peak')),
      oomKills: readKeyed(file('memory', 'memory.events')).get('oom_kill') ?? 0,
      ...pids,
    };
  }
  const usageNs = readNumber(file('cpuacct', 'cpuacct.usage'));
  return {
    cpuUsec: usageNs === undefined ? undefined : Math.round(usageNs / 1000),
    periods: cpu.get('nr_periods') ?? 0,
    throttled: cpu.get('nr_throttled') ?? 0,
    throttledUsec: Math.round((cpu.get('throttled_time') ?? 0) / 1000),
    memoryBytes: readNumber(file('memory', 'memory.usage_in_bytes')) ?? 0,
    memoryPeakBytes: readNumber(file('memory', 'memory.max_usage_in_bytes')),
    oomKills: readKeyed(file('memory', 'memory.oom_control')).get('oom_kill') ?? 0,
    ...pids,
  };
}

export function reportUsage(cg: JailCgroup, limits: Limits): void {
  heading(`What the jail used (cgroup ${WORKSHOP_CGROUP}/${cg.name})`);
  const shown: [Controller, string][] =
    cg.tree.version === 2
      ? [['cpu', 'cpu.stat'], ['memory', 'memory.peak'], ['memory', 'memory.events'], ['pids', 'pids.peak'], ['pids', 'pids.events']]
      : [['cpuacct', 'cpuacct.usage'], ['cpu', 'cpu.stat'], ['memory', 'memory.max_usage_in_bytes'], ['memory', 'memory.oom_control'], ['pids', 'pids.peak'], ['pids', 'pids.events']];
  showCommand(`cat ${shown.filter(([c]) => cg.controllers.includes(c)).map(([c, f]) => join(leafDir(cg, c), f)).join(' ')}`);
  const s = cgroupStats(cg.name);
  const seconds = (usec: number) => `${(usec / 1e6).toFixed(2)} s`;
  const cpuTime = s.cpuUsec === undefined ? 'CPU time not counted (no cpuacct controller)' : `CPU time ${seconds(s.cpuUsec)}`;
  const throttling = `throttled in ${s.throttled} of ${s.periods} periods${s.throttled ? `, ${seconds(s.throttledUsec)} waiting` : ''}`;
  explain(limits.cpus === undefined ? cpuTime : `${cpuTime} (${throttling})`);
  explain(`memory at most ${s.memoryPeakBytes === undefined ? 'not counted' : formatBytes(s.memoryPeakBytes)}${limits.memory ? ` of ${formatBytes(limits.memory)}` : ''}; OOM kills: ${s.oomKills}`);
  explain(`tasks at most ${s.pidsPeak ?? 'not counted (no pids.peak before Linux 6.1)'}${limits.pids ? ` of ${limits.pids}` : ''}; forks refused: ${s.forksRefused}`);
  if (s.oomKills) warn(`the kernel OOM-killed ${s.oomKills} process${s.oomKills > 1 ? 'es' : ''} of the jail that went past --memory`);
  if (s.forksRefused) warn(`fork() failed ${s.forksRefused} time${s.forksRefused > 1 ? 's' : ''} in the jail: it hit --pids`);
}

/**
 * The jail's init (a Node process) is in the cgroup too, and that is honest:
 * its threads count against pids.max, and past the memory limit the kernel
 * OOM-kills the process with the most memory in the cgroup — which, with a
 * small limit, is the init (its memory was charged elsewhere, but its size counts).
 */
export function weighInit(initPid: number, limits: Limits): void {
  const status = readText(`/proc/${initPid}/status`);
  const threads = Number(/^Threads:\s+(\d+)/m.exec(status)?.[1] ?? 1);
  const rss = Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1] ?? 0) * 1024;
  if (limits.pids !== undefined) {
    if (limits.pids <= threads + 1) warn(`the jail's init already has ${threads} threads, and they count against --pids ${limits.pids}: the target may not even start; try --pids ${threads + 16}`);
    else explain(`the init's own ${threads} thread${threads > 1 ? 's' : ''} count against pids.max too: the rest of the jail gets ${limits.pids - threads}`);
  }
  if (limits.memory !== undefined && limits.memory < 2 * rss) {
    warn(`the jail's init uses ${formatBytes(rss)}: past --memory ${formatBytes(limits.memory)} the OOM killer may pick it, the biggest process, and end the jail; try --memory ${formatBytes(2 ** Math.ceil(Math.log2(2 * rss)))}`);
  }
}
