// Step 06's core idea: a limit is one line written into one file of the
// jail's cgroup. `docker run --cpus 0.5` is `echo "50000 100000" > …/cpu.max`,
// nothing more. Each function below is one such flag: it says what the kernel
// will do, writes the file(s) of this host's cgroup version, and shows the
// other version's twin, so a learner on v1 sees v2's file and the other way round.
//   limitCpu      cpu.max                  (v1: cpu.cfs_quota_us + cpu.cfs_period_us)
//   pinCpus       cpuset.cpus              (the same name on v1)
//   limitMemory   memory.max + swap.max 0  (v1: memory.limit_in_bytes + memsw)
//   limitPids     pids.max                 (the same name on v1)
//   limitIo       io.max                   (v1: blkio.throttle.*_bps_device)
//   limitDevices  (no file: a BPF program) (v1: devices.deny + devices.allow)
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { colour, explain, warn } from '../../lib/output.ts';
import { CGROUP_ROOT, echoCommand, readText, unique, WORKSHOP_CGROUP, writeCgroupFile } from './cgroupfs.ts';
import { formatBytes } from './flags.ts';
import { leafDir, type Controller, type JailCgroup } from './hierarchy.ts';

/** A block device, as the kernel names it in io.max: 'MAJ:MIN'. */
export interface DeviceRate {
  dev: string;
  bytes: number;
  /** What the learner typed, when it was a path, e.g. /dev/loop0. */
  path?: string;
}

/** What a jail may use, in the kernel's units. */
export interface Limits {
  /** A share of CPU time, in CPUs: 0.5 is half of one CPU's time in every period (cpu.max). */
  cpus?: number;
  /** The CPUs the jail may run on, in the kernel's list format: '0', '0-1' (cpuset.cpus). */
  cpuset?: string;
  /** Bytes of memory, page cache included, and no swap beyond it (memory.max). */
  memory?: number;
  /** Tasks at once, processes and threads alike (pids.max). */
  pids?: number;
  /** Bytes per second read from, or written to, a block device (io.max). */
  ioReadBps?: DeviceRate[];
  ioWriteBps?: DeviceRate[];
  /**
   * The device nodes the jail may open or make, as v1 device-cgroup rules
   * 'TYPE MAJ:MIN ACCESS' (e.g. 'c 1:3 rwm'); every other one is denied.
   * Enforced where the v1 devices controller exists; see limitDevices for v2.
   */
  devices?: readonly string[];
}

/**
 * The nodes of step 04's minimal /dev, as device-cgroup rules: null, zero,
 * full, random, urandom, tty, the devpts ptmx and its terminals (136:*).
 * runc's default allow list, less /dev/console (5:1) and /dev/net/tun (10:200),
 * which our /dev does not have.
 */
export const MINIMAL_DEVICE_RULES: readonly string[] = Object.freeze([
  'c 1:3 rwm', // null
  'c 1:5 rwm', // zero
  'c 1:7 rwm', // full
  'c 1:8 rwm', // random
  'c 1:9 rwm', // urandom
  'c 5:0 rwm', // tty
  'c 5:2 rwm', // ptmx
  'c 136:* rwm', // pts/0, pts/1, …
]);

export function writeLimits(cg: JailCgroup, limits: Limits): void {
  if (limits.cpus !== undefined) limitCpu(cg, limits.cpus);
  if (limits.cpuset !== undefined) pinCpus(cg, limits.cpuset);
  if (limits.memory !== undefined) limitMemory(cg, limits.memory);
  if (limits.pids !== undefined) limitPids(cg, limits.pids);
  if (limits.ioReadBps?.length || limits.ioWriteBps?.length) limitIo(cg, limits.ioReadBps ?? [], limits.ioWriteBps ?? []);
  if (limits.devices !== undefined) limitDevices(cg, limits.devices);
}

// ---------------------------------------------------------------------------
// One limit: the host's version is written and shown, the other one shown as its twin.

interface FileWrite {
  controller: Controller;
  file: string;
  value: string | number;
  /** The file exists only with some kernel options: say this instead of failing. */
  whenMissing?: string;
}

interface LimitWrites {
  why: string;
  v2: FileWrite[];
  v1: FileWrite[];
  hint?: string;
}

function writeLimit(cg: JailCgroup, limit: LimitWrites): void {
  explain(limit.why);
  const [mine, twin] = cg.tree.version === 2 ? [limit.v2, limit.v1] : [limit.v1, limit.v2];
  for (const w of mine) {
    const path = join(leafDir(cg, w.controller), w.file);
    if (w.whenMissing && !existsSync(path)) warn(w.whenMissing);
    else writeCgroupFile(path, w.value, limit.hint);
  }
  const other = cg.tree.version === 2 ? 1 : 2;
  for (const w of twin) {
    const path = other === 2 ? join(CGROUP_ROOT, WORKSHOP_CGROUP, cg.name, w.file) : join(CGROUP_ROOT, w.controller, WORKSHOP_CGROUP, cg.name, w.file);
    explain(colour.dim(`    cgroup v${other}: ${echoCommand(path, w.value)}`));
  }
}

/** The CFS period: the quota is spent within each 100 ms, docker's default too. */
const CPU_PERIOD_US = 100_000;

function limitCpu(cg: JailCgroup, cpus: number): void {
  const quota = Math.round(cpus * CPU_PERIOD_US);
  writeLimit(cg, {
    why: `--cpus ${cpus}: at most ${quota / 1000} ms of CPU time in every ${CPU_PERIOD_US / 1000} ms, then the jail waits (is throttled). This is all docker run --cpus ${cpus} does.`,
    v2: [{ controller: 'cpu', file: 'cpu.max', value: `${quota} ${CPU_PERIOD_US}` }],
    v1: [
      { controller: 'cpu', file: 'cpu.cfs_period_us', value: CPU_PERIOD_US },
      { controller: 'cpu', file: 'cpu.cfs_quota_us', value: quota },
    ],
  });
}

function pinCpus(cg: JailCgroup, cpuset: string): void {
  // Joining a cpuset rewrites each task's CPU affinity, so nproc and
  // sched_getaffinity inside see only these CPUs.
  writeLimit(cg, {
    why: `--cpuset ${cpuset}: the jail runs on CPU ${cpuset} only (docker run --cpuset-cpus).`,
    v2: [{ controller: 'cpuset', file: 'cpuset.cpus', value: cpuset }],
    v1: [{ controller: 'cpuset', file: 'cpuset.cpus', value: cpuset }],
  });
}

function limitMemory(cg: JailCgroup, bytes: number): void {
  // Without the second write the kernel would push the jail's pages to swap
  // at the limit instead of OOM-killing: the limit would only slow it down.
  // v1's memsw is memory plus swap, so memsw = limit means no swap at all.
  // kmem is left alone: deprecated, and kernel memory already counts in the limit.
  const swapOff = swapCount() === 0 ? 'this host has no swap, so there is nothing to forbid' : 'swap accounting is off (swapaccount=0): the jail may swap beyond --memory';
  writeLimit(cg, {
    why: `--memory ${formatBytes(bytes)}: past it the kernel reclaims cache, then OOM-kills a process of the jail, never one outside (docker run --memory).`,
    v2: [
      { controller: 'memory', file: 'memory.max', value: bytes },
      { controller: 'memory', file: 'memory.swap.max', value: 0, whenMissing: swapOff },
    ],
    v1: [
      { controller: 'memory', file: 'memory.limit_in_bytes', value: bytes },
      { controller: 'memory', file: 'memory.memsw.limit_in_bytes', value: bytes, whenMissing: swapOff },
    ],
  });
}

/** Active swap areas: /proc/swaps is a header line, then one line each. */
function swapCount(): number {
  return readText('/proc/swaps').split('\n').length - 1;
}

function limitPids(cg: JailCgroup, pids: number): void {
  writeLimit(cg, {
    why: `--pids ${pids}: fork() and clone() fail with EAGAIN once the jail has ${pids} tasks, threads included: a fork bomb stops here (docker run --pids-limit).`,
    v2: [{ controller: 'pids', file: 'pids.max', value: pids }],
    v1: [{ controller: 'pids', file: 'pids.max', value: pids }],
  });
}

function limitIo(cg: JailCgroup, reads: DeviceRate[], writes: DeviceRate[]): void {
  // v1 throttles only IO a process issues itself: buffered writes are written
  // back later by kernel threads, outside the cgroup, so only O_DIRECT obeys.
  // v2 charges writeback to the cgroup that dirtied the pages.
  const devices = unique([...reads, ...writes].map((d) => d.dev));
  const rate = (list: DeviceRate[], dev: string) => list.find((d) => d.dev === dev)?.bytes;
  const named = (dev: string) => [...reads, ...writes].find((d) => d.dev === dev)?.path ?? dev;
  const says = [...reads.map((d) => `reads from ${named(d.dev)}`), ...writes.map((d) => `writes to ${named(d.dev)}`)].map(
    (what, i) => `${what} at ${formatBytes([...reads, ...writes][i]!.bytes)}/s`,
  );
  writeLimit(cg, {
    why: `--io-read-bps / --io-write-bps: the jail ${says.join(', ')} at most; the kernel delays its requests beyond that (docker run --device-write-bps).`,
    v2: devices.map((dev) => ({
      controller: 'blkio' as const,
      file: 'io.max',
      value: [dev, rate(reads, dev) && `rbps=${rate(reads, dev)}`, rate(writes, dev) && `wbps=${rate(writes, dev)}`].filter(Boolean).join(' '),
    })),
    v1: [
      ...reads.map((d) => ({ controller: 'blkio' as const, file: 'blkio.throttle.read_bps_device', value: `${d.dev} ${d.bytes}` })),
      ...writes.map((d) => ({ controller: 'blkio' as const, file: 'blkio.throttle.write_bps_device', value: `${d.dev} ${d.bytes}` })),
    ],
    hint: 'the kernel throttles whole disks, not partitions: use e.g. /dev/sda, not /dev/sda1 (lsblk lists them)',
  });
}

/**
 * A device node is only a name for a number pair: root in a jail may mknod
 * 8:0 anywhere and read the host's disk through it, whatever /dev holds. The
 * v1 devices controller checks every open() and mknod() of a node against
 * the cgroup's list, even for root: first `a` (all) into devices.deny, which
 * empties the list, then each allowed node into devices.allow (runc's order).
 * r and w are open() for reading and writing, m is mknod().
 */
function limitDevices(cg: JailCgroup, rules: readonly string[]): void {
  if (!cg.controllers.includes('devices')) {
    // Only on v2: on v1 a missing devices controller stops prepare() (controllersFor).
    explain('devices: cgroup v2 has no devices.allow. There a BPF program attached to the cgroup (BPF_CGROUP_DEVICE) says yes or no to every open() and mknod() of a device node; runc and crun build one from the same rules.');
    explain("This workshop loads no BPF: on v2 the jail relies on its minimal /dev (step 04) and on the user namespace, in which the kernel refuses mknod() of a device.");
    return;
  }
  writeLimit(cg, {
    why: `devices: every device node is denied but ${rules.length ? rules.join(', ') : 'none'} (docker run does the same, with its default list and a rule per --device). cgroup v2 has no such files: a BPF program attached to the cgroup does it there.`,
    v2: [],
    v1: [
      { controller: 'devices', file: 'devices.deny', value: 'a' },
      ...rules.map((rule) => ({ controller: 'devices' as const, file: 'devices.allow', value: rule })),
    ],
    hint: "a rule is 'TYPE MAJ:MIN ACCESS': type a, b or c, * for any number, access of r, w and m, e.g. 'c 1:3 rwm'",
  });
}
