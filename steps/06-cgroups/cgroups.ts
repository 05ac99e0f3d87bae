// Step 06: rationing the prisoners' food. Without limits one clever program —
// a fork bomb, a memory hog, a busy loop — starves the whole host. A cgroup
// is a group of processes that the kernel rations: CPU time, which CPUs,
// memory, how many processes, how fast the disks. And a cgroup is a
// directory: making one is `mkdir`, a limit is one line written into one of
// its files, joining it is writing a PID into cgroup.procs. `docker run
// --cpus 0.5` is `echo "50000 100000" > …/cpu.max`, nothing more.
//
// Two layouts exist, and a learner's machine has one of them:
//   cgroup v2   one tree at /sys/fs/cgroup. A controller works in a subtree
//               only once every parent lists it in cgroup.subtree_control,
//               and processes live only in leaves ("no internal processes").
//   cgroup v1   one tree per controller (/sys/fs/cgroup/memory, …/pids, …);
//               a jail gets the same path in each, and joins each one.
//   hybrid      v1 controllers, plus a v2 tree at /sys/fs/cgroup/unified that
//               holds none of them (systemd's compromise): the v1 ones do the work.
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, statSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import type { FlagSpecs } from '../../lib/cli.ts';
import type { CleanupStack } from '../../lib/cleanup.ts';
import { JailError } from '../../lib/errors.ts';
import { colour, explain, heading, ok, showCommand, warn } from '../../lib/output.ts';
import { cgroupMode, type CgroupMode } from '../../lib/preflight.ts';
import type { JailHook, JailSpec } from '../../lib/spec.ts';

/** Every jail's cgroup lives under this one, so `npm run clean` finds them all. */
export const WORKSHOP_CGROUP = 'build-a-jail';
const CGROUP_ROOT = '/sys/fs/cgroup';

// ---------------------------------------------------------------------------
// Units: what people type (64M, 1.5G, 10MB/s) into what the kernel reads (bytes).

/** Powers of 1024, as `docker run --memory 64m` and the kernel's own "64M" mean. */
const BINARY_UNITS: Record<string, number> = { '': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 };

/** The most PIDs a Linux system can ever have (PID_MAX_LIMIT); pids.max refuses more. */
const PID_MAX_LIMIT = 4_194_304;

function flagError(flag: string, problem: string, example: string, hint?: string): JailError {
  return new JailError(`${flag}: ${problem}; use e.g. ${example}`, hint, 2);
}

function bytesOf(text: string): number | undefined {
  const m = /^\s*(-?\d*\.?\d+)\s*([kmgt]?)(i?b)?\s*$/i.exec(text);
  return m ? Math.floor(Number(m[1]) * BINARY_UNITS[m[2]!.toLowerCase()]!) : undefined;
}

/** '64M', '1.5G', '512k', '1048576' -> bytes (k, M, G, T are powers of 1024). */
export function parseSize(text: string, flag = '--memory'): number {
  const bytes = bytesOf(text);
  const hint = 'a size is bytes with an optional k, M, G or T (powers of 1024), as in docker run --memory';
  if (bytes === undefined) throw flagError(flag, `'${text}' is not a size`, '64M or 1.5G', hint);
  if (bytes <= 0) throw flagError(flag, `'${text}' is not more than zero`, '64M or 1.5G', hint);
  return bytes;
}

/** '10MB/s', '1M', '512k/s', '1048576' -> bytes per second. */
export function parseRate(text: string, flag = '--io-write-bps'): number {
  const bytes = bytesOf(text.replace(/\/s\s*$/i, ''));
  const hint = 'a rate is bytes per second with an optional k, M or G (powers of 1024) and an optional /s';
  if (bytes === undefined) throw flagError(flag, `'${text}' is not a rate`, '10MB/s or 512k', hint);
  if (bytes <= 0) throw flagError(flag, `'${text}' is not more than zero`, '10MB/s or 512k', hint);
  return bytes;
}

/** '0.5' -> 0.5: a share of one CPU's time, between 0.01 and the number of CPUs. */
export function parseCpus(text: string, flag = '--cpus'): number {
  const m = /^\s*(-?\d*\.?\d+)\s*$/.exec(text);
  if (!m) throw flagError(flag, `'${text}' is not a number of CPUs`, '0.5 or 2');
  const cpus = Number(m[1]);
  const online = onlineCpus().length;
  // 0.01 CPU is a 1 ms quota per 100 ms period, the smallest quota the kernel takes.
  if (cpus < 0.01 || cpus > online) {
    throw flagError(flag, `'${text}' is out of range: this machine has ${online} CPU${online === 1 ? '' : 's'}, so 0.01 to ${online}`, '0.5');
  }
  return cpus;
}

/** '0', '0-1', '0,1' -> the kernel's CPU list format, checked against the CPUs that are online. */
export function parseCpuset(text: string, flag = '--cpuset'): string {
  const cpus = parseCpuList(text);
  if (!cpus) throw flagError(flag, `'${text}' is not a list of CPUs`, '0, 0-1 or 0,1');
  const online = onlineCpus();
  const missing = cpus.filter((cpu) => !online.includes(cpu));
  if (missing.length) {
    throw flagError(flag, `CPU ${missing.join(',')} is not online (this machine has CPUs ${formatCpuList(online)})`, formatCpuList(online.slice(0, 1)));
  }
  return formatCpuList(cpus);
}

/** '64' -> 64 processes (threads count too: the kernel rations tasks). */
export function parsePids(text: string, flag = '--pids'): number {
  if (!/^\s*-?\d+\s*$/.test(text)) throw flagError(flag, `'${text}' is not a number of processes`, '64');
  const pids = Number(text);
  if (pids < 1) throw flagError(flag, `'${text}' is not more than zero`, '64');
  if (pids >= PID_MAX_LIMIT) throw flagError(flag, `'${text}' is more than Linux has PIDs (${PID_MAX_LIMIT})`, '64');
  return pids;
}

/** A block device, as the kernel names it in io.max: 'MAJ:MIN'. */
export interface DeviceRate {
  dev: string;
  bytes: number;
  /** What the learner typed, when it was a path, e.g. /dev/loop0. */
  path?: string;
}

/** 'DEV:RATE', DEV a block device path or MAJ:MIN: '/dev/sda:10MB/s', '8:0:1M'. */
export function parseDeviceRate(text: string, flag = '--io-write-bps'): DeviceRate {
  const example = '/dev/sda:10MB/s or 8:0:10MB/s';
  const cut = text.lastIndexOf(':');
  if (cut <= 0) throw flagError(flag, `'${text}' is not DEV:RATE`, example);
  const device = text.slice(0, cut);
  const bytes = parseRate(text.slice(cut + 1), flag);
  if (/^\d+:\d+$/.test(device)) return { dev: device, bytes };
  if (!device.startsWith('/')) throw flagError(flag, `'${device}' is not a block device path or MAJ:MIN`, example);
  let st;
  try {
    st = statSync(device, { bigint: true });
  } catch {
    throw flagError(flag, `${device} does not exist`, example, 'lsblk lists the block devices, with MAJ:MIN');
  }
  if (!st.isBlockDevice()) throw flagError(flag, `${device} is not a block device`, example, 'lsblk lists the block devices, with MAJ:MIN');
  return { dev: majorMinor(st.rdev), bytes, path: device };
}

/** glibc's major()/minor(): a dev_t keeps 12+20 bits of major and 8+24 of minor, interleaved. */
function majorMinor(rdev: bigint): string {
  const major = ((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & 0xfffff000n);
  const minor = (rdev & 0xffn) | ((rdev >> 12n) & 0xffffff00n);
  return `${major}:${minor}`;
}

function parseCpuList(text: string): number[] | undefined {
  const cpus = new Set<number>();
  for (const part of text.trim().split(',')) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part.trim());
    if (!m) return undefined;
    const [from, to] = [Number(m[1]), Number(m[2] ?? m[1])];
    if (to < from) return undefined;
    for (let cpu = from; cpu <= to; cpu++) cpus.add(cpu);
  }
  return [...cpus].sort((a, b) => a - b);
}

function formatCpuList(cpus: number[]): string {
  const ranges: string[] = [];
  for (let i = 0; i < cpus.length; i++) {
    let j = i;
    while (j + 1 < cpus.length && cpus[j + 1] === cpus[j]! + 1) j++;
    ranges.push(i === j ? `${cpus[i]}` : `${cpus[i]}-${cpus[j]}`);
    i = j;
  }
  return ranges.join(',');
}

function onlineCpus(): number[] {
  return parseCpuList(readFileSync('/sys/devices/system/cpu/online', 'utf8')) ?? [0];
}

// ---------------------------------------------------------------------------
// Limits: what a jail may use, in the kernel's units.

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
}

/** The flags of step 06, for lib/cli.ts's parseArgs. */
export const cgroupFlags = {
  cpus: { type: 'string', value: 'N', help: 'CPU time, in CPUs (0.5 = half of one CPU), like docker run --cpus' },
  cpuset: { type: 'string', value: 'LIST', help: 'the CPUs the jail may run on: 0, 0-1 or 0,1' },
  memory: { type: 'string', value: 'SIZE', help: 'memory, e.g. 64M or 1.5G, with no swap beyond it' },
  pids: { type: 'string', value: 'N', help: 'processes and threads at once: a fork bomb stops here' },
  'io-read-bps': { type: 'list', value: 'DEV:RATE', help: 'read speed of a block device, e.g. /dev/sda:10MB/s' },
  'io-write-bps': { type: 'list', value: 'DEV:RATE', help: 'write speed of a block device, e.g. /dev/sda:10MB/s' },
} satisfies FlagSpecs;

export interface LimitFlags {
  cpus?: string;
  cpuset?: string;
  memory?: string;
  pids?: string;
  'io-read-bps'?: string[];
  'io-write-bps'?: string[];
}

export function limitsFromFlags(flags: LimitFlags): Limits {
  const limits: Limits = {};
  if (flags.cpus !== undefined) limits.cpus = parseCpus(flags.cpus);
  if (flags.cpuset !== undefined) limits.cpuset = parseCpuset(flags.cpuset);
  if (flags.memory !== undefined) limits.memory = parseSize(flags.memory, '--memory');
  if (flags.pids !== undefined) limits.pids = parsePids(flags.pids);
  if (flags['io-read-bps']?.length) limits.ioReadBps = flags['io-read-bps'].map((f) => parseDeviceRate(f, '--io-read-bps'));
  if (flags['io-write-bps']?.length) limits.ioWriteBps = flags['io-write-bps'].map((f) => parseDeviceRate(f, '--io-write-bps'));
  return limits;
}

// ---------------------------------------------------------------------------
// Which cgroups this host has.

/** The controllers this step uses, by their v1 names (v2 calls blkio "io" and folds cpuacct into cpu). */
type Controller = 'cpu' | 'cpuacct' | 'cpuset' | 'memory' | 'pids' | 'blkio';
const CONTROLLERS: Controller[] = ['cpu', 'cpuacct', 'cpuset', 'memory', 'pids', 'blkio'];
const V2_NAME: Record<Controller, string | undefined> = { cpu: 'cpu', cpuacct: undefined, cpuset: 'cpuset', memory: 'memory', pids: 'pids', blkio: 'io' };

export interface CgroupTree {
  mode: Exclude<CgroupMode, 'none'>;
  /** The version whose controllers hold the limits: hybrid hosts use v1. */
  version: 1 | 2;
  /** Where each controller's hierarchy is mounted: on v2 all share /sys/fs/cgroup. */
  roots: Partial<Record<Controller, string>>;
}

/** statfs says v2, v1 or hybrid (lib/preflight.ts); on v1 /proc/self/mounts says where each controller is. */
export function detectCgroups(): CgroupTree {
  const mode = cgroupMode();
  if (mode === 'none') {
    throw new JailError('no cgroup filesystem is mounted on /sys/fs/cgroup', 'mount cgroup v2: sudo mount -t cgroup2 none /sys/fs/cgroup (systemd does it at boot)');
  }
  const roots: CgroupTree['roots'] = {};
  if (mode === 'v2') {
    for (const c of CONTROLLERS) roots[c] = CGROUP_ROOT;
    return { mode, version: 2, roots };
  }
  // A v1 hierarchy is mounted with its controllers as mount options; several
  // may share one (Debian mounts cpu,cpuacct together).
  for (const [dir, type, options] of cgroupMounts()) {
    if (type !== 'cgroup') continue;
    for (const c of CONTROLLERS) if (options.includes(c)) roots[c] ??= dir;
  }
  return { mode, version: 1, roots };
}

/** Every cgroup and cgroup2 mount: [mount point, type, options]. */
function cgroupMounts(): [string, string, string[]][] {
  return readFileSync('/proc/self/mounts', 'utf8')
    .split('\n')
    .map((line) => line.split(' '))
    .filter(([, , type]) => type === 'cgroup' || type === 'cgroup2')
    .map(([, dir, type, options]) => [dir!, type!, options!.split(',')]);
}

function sayWhichCgroups(tree: CgroupTree): void {
  showCommand(`stat -fc %T ${CGROUP_ROOT}    # cgroup2fs: v2; tmpfs: v1 or hybrid`);
  if (tree.mode === 'v2') {
    explain('This host uses cgroup v2: one tree at /sys/fs/cgroup, controllers switched on per subtree.');
  } else if (tree.mode === 'hybrid') {
    explain('This host uses hybrid cgroups: a v1 tree per controller (/sys/fs/cgroup/memory, …/pids, …)');
    explain('and a v2 tree at /sys/fs/cgroup/unified that holds none of them, so the limits go into the v1 trees.');
  } else {
    explain('This host uses cgroup v1: one tree per controller (/sys/fs/cgroup/memory, …/pids, …).');
  }
}

// ---------------------------------------------------------------------------
// One jail's cgroup: build-a-jail/NAME in the tree (v2), or in each controller's tree (v1).

interface JailCgroup {
  tree: CgroupTree;
  name: string;
  controllers: Controller[];
}

const workshopDir = (tree: CgroupTree, c: Controller) => join(tree.roots[c]!, WORKSHOP_CGROUP);
const leafDir = (cg: JailCgroup, c: Controller) => join(workshopDir(cg.tree, c), cg.name);
const unique = <T>(items: T[]): T[] => [...new Set(items)];
/** On v2 one directory; on v1 one per hierarchy the jail is in. */
const leafDirs = (cg: JailCgroup) => unique(cg.controllers.map((c) => leafDir(cg, c)));

/** cpu, memory and pids always (they are also what report() reads); cpuset and io only when limited. */
function controllersFor(tree: CgroupTree, limits: Limits): Controller[] {
  const wanted: Controller[] = ['cpu', 'cpuacct', 'memory', 'pids'];
  if (limits.cpuset) wanted.push('cpuset');
  if (limits.ioReadBps?.length || limits.ioWriteBps?.length) wanted.push('blkio');
  if (tree.version === 2) return wanted;
  // cpuacct only counts CPU time for report(); a host without it still gets every limit.
  const missing = wanted.filter((c) => !tree.roots[c] && c !== 'cpuacct');
  if (missing.length) {
    const c = missing[0]!;
    throw new JailError(`the cgroup v1 controller ${c} is not mounted`, `mount it: sudo mkdir -p ${CGROUP_ROOT}/${c} && sudo mount -t cgroup -o ${c} cgroup ${CGROUP_ROOT}/${c}`);
  }
  return wanted.filter((c) => tree.roots[c]);
}

/** v2: mkdir the parent and the leaf, switching the controllers on in each parent on the way. */
function createCgroupV2(cg: JailCgroup): void {
  const names = unique(cg.controllers.map((c) => V2_NAME[c]).filter((n): n is string => !!n));
  const parent = workshopDir(cg.tree, 'cpu');
  enableControllers(CGROUP_ROOT, names);
  makeCgroupDir(parent);
  enableControllers(parent, names);
  makeCgroupDir(leafDir(cg, 'cpu'), cg.name);
}

/**
 * A v2 controller acts in a cgroup only if the parent lists it in
 * cgroup.subtree_control — from the root down. The root's list stays as we
 * leave it: other cgroups (systemd's) may rely on it.
 */
function enableControllers(dir: string, names: string[]): void {
  const available = readWords(join(dir, 'cgroup.controllers'));
  const absent = names.filter((n) => !available.includes(n));
  if (absent.length) {
    throw new JailError(
      `the cgroup v2 controller${absent.length > 1 ? 's' : ''} ${absent.join(', ')} ${absent.length > 1 ? 'are' : 'is'} not available in ${dir}`,
      `switch ${absent.length > 1 ? 'them' : 'it'} on in the parent: echo "${absent.map((n) => '+' + n).join(' ')}" > ${join(dir, '..', 'cgroup.subtree_control')}`,
    );
  }
  const enabled = readWords(join(dir, 'cgroup.subtree_control'));
  const off = names.filter((n) => !enabled.includes(n));
  if (off.length === 0) {
    explain(`${join(dir, 'cgroup.subtree_control')} already lists ${names.join(' ')}`);
    return;
  }
  writeCgroupFile(
    join(dir, 'cgroup.subtree_control'),
    off.map((n) => '+' + n).join(' '),
    // EBUSY: a v2 cgroup with processes in it cannot hand controllers to children.
    'cgroup v2 puts processes only in leaves: a cgroup with processes cannot switch controllers on for its children',
  );
}

/** v1: the same build-a-jail/NAME in every controller's own tree. */
function createCgroupV1(cg: JailCgroup): void {
  for (const root of unique(cg.controllers.map((c) => cg.tree.roots[c]!))) {
    const parent = join(root, WORKSHOP_CGROUP);
    const leaf = join(parent, cg.name);
    const cpuset = cg.tree.roots.cpuset === root; // also when co-mounted with a controller we use
    makeCgroupDir(parent);
    if (cpuset) inheritCpuset(parent, root, ['cpuset.cpus', 'cpuset.mems']);
    makeCgroupDir(leaf, cg.name);
    // --cpuset writes the leaf's CPUs itself (pinCpus); the memory nodes always come from the parent.
    if (cpuset) inheritCpuset(leaf, parent, cg.controllers.includes('cpuset') ? ['cpuset.mems'] : ['cpuset.cpus', 'cpuset.mems']);
  }
}

/**
 * A new v1 cpuset starts with no CPUs and no memory nodes, and a process
 * cannot join an empty one (ENOSPC): copy the parent's before the child is
 * usable. (v2 cpusets inherit; cgroup.clone_children does it on v1 too, but
 * it is a switch on someone else's parent.)
 */
function inheritCpuset(dir: string, from: string, files: string[]): void {
  for (const file of files) {
    if (readText(join(dir, file)) === '') writeCgroupFile(join(dir, file), readText(join(from, file)));
  }
}

function makeCgroupDir(dir: string, jailName?: string): void {
  if (existsSync(dir)) {
    if (!jailName) return; // the workshop parent, shared by running jails
    throw new JailError(`the cgroup ${dir} already exists: a jail named ${jailName} is running, or a killed run left it`, 'npm run clean removes what a killed run left behind');
  }
  showCommand(`mkdir ${dir}`);
  try {
    mkdirSync(dir);
  } catch (err) {
    throw new JailError(`could not make the cgroup ${dir}: ${(err as Error).message}`, hintFor(err));
  }
}

// ---------------------------------------------------------------------------
// Limits as file writes. Each limit says what it writes on both versions:
// the host's own version is written and shown, the other one shown as its twin.

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

/** The whole API of cgroups: one line into one file. */
function writeCgroupFile(path: string, value: string | number, hint?: string): void {
  showCommand(echoCommand(path, value));
  try {
    writeFileSync(path, String(value));
  } catch (err) {
    throw new JailError(`could not write '${value}' to ${path}: ${(err as Error).message}`, hint ?? hintFor(err));
  }
}

const echoCommand = (path: string, value: string | number) => `echo ${/\s/.test(String(value)) ? `"${value}"` : value} > ${path}`;

function hintFor(err: unknown): string | undefined {
  switch ((err as NodeJS.ErrnoException).code) {
    case 'EACCES':
    case 'EPERM':
      return 'cgroups belong to root: run with sudo';
    case 'ENOENT':
      return 'the controller is not switched on for this cgroup; npm run doctor shows the host\'s cgroups';
    case 'ENOSPC':
      return 'a v1 cpuset needs cpuset.cpus and cpuset.mems before a process can join it';
  }
  return undefined;
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

function writeLimits(cg: JailCgroup, limits: Limits): void {
  if (limits.cpus !== undefined) limitCpu(cg, limits.cpus);
  if (limits.cpuset !== undefined) pinCpus(cg, limits.cpuset);
  if (limits.memory !== undefined) limitMemory(cg, limits.memory);
  if (limits.pids !== undefined) limitPids(cg, limits.pids);
  if (limits.ioReadBps?.length || limits.ioWriteBps?.length) limitIo(cg, limits.ioReadBps ?? [], limits.ioWriteBps ?? []);
}

/**
 * Writing a PID into cgroup.procs moves that process, all its threads, and
 * every child it forks from then on. Existing memory is not moved along: only
 * what the process allocates afterwards is charged.
 */
function addProcess(cg: JailCgroup, pid: number): void {
  for (const dir of leafDirs(cg)) writeCgroupFile(join(dir, 'cgroup.procs'), pid);
  const other = cg.tree.version === 2 ? `echo ${pid} > ${CGROUP_ROOT}/{cpu,memory,pids}/${WORKSHOP_CGROUP}/${cg.name}/cgroup.procs` : `echo ${pid} > ${CGROUP_ROOT}/${WORKSHOP_CGROUP}/${cg.name}/cgroup.procs`;
  explain(colour.dim(`    cgroup v${cg.tree.version === 2 ? 1 : 2}: ${other}`));
}

// ---------------------------------------------------------------------------
// Emptying and removing: a cgroup with a process in it cannot be removed.

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

function procsIn(dirs: string[]): number[] {
  return unique(dirs.flatMap((dir) => readText(join(dir, 'cgroup.procs')).split('\n').filter(Boolean).map(Number)));
}

/** Kills every process in the cgroups, and waits until none is left. */
async function killCgroup(dirs: string[]): Promise<void> {
  dirs = dirs.filter((dir) => existsSync(dir));
  if (procsIn(dirs).length === 0) return;
  const killFile = dirs.map((dir) => join(dir, 'cgroup.kill')).find((f) => existsSync(f));
  if (killFile) {
    // v2 (Linux 5.14+): one write kills every process in the subtree, including
    // those forked while it runs; no race with a fork bomb.
    writeCgroupFile(killFile, 1);
  } else {
    // Without cgroup.kill a fork bomb forks faster than we kill, one PID at a
    // time: first allow no new task at all (pids.max 0), then kill until empty.
    for (const dir of dirs) if (existsSync(join(dir, 'pids.max'))) writeCgroupFile(join(dir, 'pids.max'), 0);
    showCommand(`kill -9 $(cat ${dirs.map((d) => join(d, 'cgroup.procs')).join(' ')})`);
  }
  const deadline = Date.now() + 10_000;
  for (let pids = procsIn(dirs); pids.length; pids = procsIn(dirs)) {
    if (Date.now() > deadline) throw new JailError(`processes ${pids.join(' ')} in ${dirs[0]} would not die`, 'a process stuck in the kernel (state D) cannot be killed; see ps -o pid,stat,wchan -p PID');
    if (!killFile) for (const pid of pids) signalKill(pid);
    await pause(20);
  }
}

function signalKill(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {} // already gone
}

/** Empties and removes a cgroup and any child cgroups the jail made inside it, deepest first. */
async function removeCgroupTree(dir: string): Promise<void> {
  if (!existsSync(dir)) return;
  for (const child of subdirs(dir)) await removeCgroupTree(child);
  await killCgroup([dir]);
  await removeCgroupDir(dir);
}

/** rmdir, as for any directory; the control files inside are not real files. */
async function removeCgroupDir(dir: string, onlyIfEmpty = false): Promise<boolean> {
  if (onlyIfEmpty && (!existsSync(dir) || subdirs(dir).length)) return false;
  showCommand(`rmdir ${dir}`);
  // A process that was just killed may hold the cgroup for a moment (EBUSY).
  for (const deadline = Date.now() + 3000; ; await pause(20)) {
    try {
      rmdirSync(dir);
      return true;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return false;
      if (onlyIfEmpty && (code === 'ENOTEMPTY' || code === 'EBUSY')) return false; // another jail moved in
      if (code !== 'EBUSY' || Date.now() > deadline) throw new JailError(`could not remove the cgroup ${dir}: ${(err as Error).message}`, 'npm run clean removes what is left');
    }
  }
}

/** One jail's leaf in every hierarchy: child cgroups it made first, then kill what is inside, then rmdir. */
async function removeLeaves(leaves: string[]): Promise<string[]> {
  leaves = leaves.filter((dir) => existsSync(dir));
  for (const leaf of leaves) for (const child of subdirs(leaf)) await removeCgroupTree(child);
  // All hierarchies at once: on v1 only the pids tree can stop a fork bomb (pids.max 0).
  await killCgroup(leaves);
  const removed: string[] = [];
  for (const leaf of leaves) if (await removeCgroupDir(leaf)) removed.push(leaf);
  return removed;
}

/** The undo of prepare(): empty and remove the leaf, then the workshop parent if no other jail uses it. */
async function removeCgroup(cg: JailCgroup): Promise<void> {
  await removeLeaves(leafDirs(cg));
  for (const parent of unique(cg.controllers.map((c) => workshopDir(cg.tree, c)))) await removeCgroupDir(parent, true);
}

/** For `npm run clean`: removes every cgroup under build-a-jail in every hierarchy, killing what is left in them. */
export async function cleanCgroups(): Promise<string[]> {
  const parents = unique(cgroupMounts().map(([dir]) => join(dir, WORKSHOP_CGROUP))).filter((dir) => existsSync(dir));
  const names = unique(parents.flatMap((parent) => subdirs(parent).map((leaf) => basename(leaf))));
  const removed: string[] = [];
  for (const name of names) removed.push(...(await removeLeaves(parents.map((parent) => join(parent, name)))));
  for (const parent of parents) if (await removeCgroupDir(parent, true)) removed.push(parent);
  return removed;
}

/** The directories of a jail's cgroup that exist now (one on v2, one per hierarchy on v1). */
export function cgroupPaths(name: string): string[] {
  const tree = detectCgroups();
  return unique(CONTROLLERS.filter((c) => tree.roots[c]).map((c) => join(workshopDir(tree, c), name))).filter((dir) => existsSync(dir));
}

// ---------------------------------------------------------------------------
// What the jail used: the kernel counts it all in the cgroup's files.

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

function reportUsage(cg: JailCgroup, limits: Limits): void {
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
function weighInit(initPid: number, limits: Limits): void {
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

// ---------------------------------------------------------------------------
// The hook: around one jail, from before it exists until after it is gone.

/**
 * prepare(): make the jail's cgroup and write its limits (and register its
 * removal); attach(): move the jail's init into it before the target starts,
 * so the target never runs unlimited; report(): what the jail used.
 */
export function cgroupHook(limits: Limits): JailHook {
  const made = new Map<string, JailCgroup>();
  const cgroupOf = (spec: JailSpec): JailCgroup => {
    const cg = made.get(spec.name);
    if (!cg) throw new JailError(`the cgroup of ${spec.name} was not made`, 'this looks like a bug in the workshop: attach() ran before prepare()');
    return cg;
  };
  return {
    name: 'cgroups',
    async prepare(spec: JailSpec, cleanup: CleanupStack) {
      heading(`Ration the jail: a cgroup for ${spec.name}`);
      const tree = detectCgroups();
      sayWhichCgroups(tree);
      const cg: JailCgroup = { tree, name: spec.name, controllers: controllersFor(tree, limits) };
      cleanup.defer(`remove cgroup ${WORKSHOP_CGROUP}/${spec.name}`, () => removeCgroup(cg));
      if (tree.version === 2) createCgroupV2(cg);
      else createCgroupV1(cg);
      writeLimits(cg, limits);
      made.set(spec.name, cg);
    },
    async attach(spec: JailSpec, initPid: number) {
      const cg = cgroupOf(spec);
      explain('The jail joins its cgroup before the target runs: its children are born inside.');
      addProcess(cg, initPid);
      weighInit(initPid, limits);
      ok(`PID ${initPid} and all it starts are limited`);
    },
    async report(spec: JailSpec) {
      const cg = made.get(spec.name);
      if (cg) reportUsage(cg, limits);
    },
  };
}

// ---------------------------------------------------------------------------
// Reading cgroup files: numbers, and "key value" lines.

function readText(path: string): string {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch {
    return '';
  }
}

const readWords = (path: string) => readText(path).split(/\s+/).filter(Boolean);

function readNumber(path: string): number | undefined {
  const text = readText(path);
  return text === '' || text === 'max' ? undefined : Number(text);
}

function readKeyed(path: string): Map<string, number> {
  const map = new Map<string, number>();
  for (const line of readText(path).split('\n')) {
    const [key, value] = line.trim().split(/\s+/);
    if (key && value !== undefined) map.set(key, Number(value));
  }
  return map;
}

function subdirs(dir: string): string[] {
  try {
    return readdirSync(dir, { withFileTypes: true })
      .filter((e) => e.isDirectory())
      .map((e) => join(dir, e.name));
  } catch {
    return [];
  }
}

function swapCount(): number {
  return readText('/proc/swaps').split('\n').length - 1;
}

function formatBytes(bytes: number): string {
  for (const [unit, size] of [['G', 2 ** 30], ['M', 2 ** 20], ['k', 2 ** 10]] as const) {
    if (bytes >= size) return `${Number((bytes / size).toFixed(1))}${unit}`;
  }
  return `${bytes}B`;
}
