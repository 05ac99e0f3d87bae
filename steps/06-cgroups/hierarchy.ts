// Where a jail's cgroup lives, and how it is made and joined. Two layouts
// exist, and a learner's machine has one of them:
//   cgroup v2   one tree at /sys/fs/cgroup. A controller works in a subtree
//               only once every parent lists it in cgroup.subtree_control,
//               and processes live only in leaves ("no internal processes").
//   cgroup v1   one tree per controller (/sys/fs/cgroup/memory, …/pids, …);
//               a jail gets the same path in each, and joins each one.
//   hybrid      v1 controllers, plus a v2 tree at /sys/fs/cgroup/unified that
//               holds none of them (systemd's compromise): the v1 ones do the work.
// Either way a jail's cgroup is build-a-jail/NAME: made with mkdir, joined by
// writing a PID into its cgroup.procs.
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { JailError } from '../../lib/errors.ts';
import { colour, explain, showCommand } from '../../lib/output.ts';
import { cgroupMode, type CgroupMode } from '../../lib/preflight.ts';
import { CGROUP_ROOT, hintFor, readText, readWords, unique, WORKSHOP_CGROUP, writeCgroupFile } from './cgroupfs.ts';
import type { Limits } from './limits.ts';

/**
 * The controllers this step uses, by their v1 names (v2 calls blkio "io" and
 * folds cpuacct into cpu; it has no devices controller at all).
 */
export type Controller = 'cpu' | 'cpuacct' | 'cpuset' | 'memory' | 'pids' | 'blkio' | 'devices';
const CONTROLLERS: Controller[] = ['cpu', 'cpuacct', 'cpuset', 'memory', 'pids', 'blkio', 'devices'];
const V2_NAME: Record<Controller, string | undefined> = { cpu: 'cpu', cpuacct: undefined, cpuset: 'cpuset', memory: 'memory', pids: 'pids', blkio: 'io', devices: undefined };

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
    // v2 filters devices with a BPF program attached to the cgroup, not with files (see limitDevices).
    for (const c of CONTROLLERS) if (c !== 'devices') roots[c] = CGROUP_ROOT;
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
export function cgroupMounts(): [string, string, string[]][] {
  return readFileSync('/proc/self/mounts', 'utf8')
    .split('\n')
    .map((line) => line.split(' '))
    .filter(([, , type]) => type === 'cgroup' || type === 'cgroup2')
    .map(([, dir, type, options]) => [dir!, type!, options!.split(',')]);
}

export function sayWhichCgroups(tree: CgroupTree): void {
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

export interface JailCgroup {
  tree: CgroupTree;
  name: string;
  controllers: Controller[];
}

export const workshopDir = (tree: CgroupTree, c: Controller): string => join(tree.roots[c]!, WORKSHOP_CGROUP);
export const leafDir = (cg: JailCgroup, c: Controller): string => join(workshopDir(cg.tree, c), cg.name);
/** On v2 one directory; on v1 one per hierarchy the jail is in. */
export const leafDirs = (cg: JailCgroup): string[] => unique(cg.controllers.map((c) => leafDir(cg, c)));

/** The directories of a jail's cgroup that exist now (one on v2, one per hierarchy on v1). */
export function cgroupPaths(name: string): string[] {
  const tree = detectCgroups();
  return unique(CONTROLLERS.filter((c) => tree.roots[c]).map((c) => join(workshopDir(tree, c), name))).filter((dir) => existsSync(dir));
}

/**
 * cpu, memory and pids always (they are also what report() reads); cpuset,
 * io and devices only when limited — devices only on v1, where it is a controller.
 */
function controllersFor(tree: CgroupTree, limits: Limits): Controller[] {
  const wanted: Controller[] = ['cpu', 'cpuacct', 'memory', 'pids'];
  if (limits.cpuset) wanted.push('cpuset');
  if (limits.ioReadBps?.length || limits.ioWriteBps?.length) wanted.push('blkio');
  if (tree.version === 2) return wanted;
  if (limits.devices !== undefined) wanted.push('devices');
  // cpuacct only counts CPU time for report(); a host without it still gets every limit.
  const missing = wanted.filter((c) => !tree.roots[c] && c !== 'cpuacct');
  if (missing.length) {
    const c = missing[0]!;
    throw new JailError(`the cgroup v1 controller ${c} is not mounted`, `mount it: sudo mkdir -p ${CGROUP_ROOT}/${c} && sudo mount -t cgroup -o ${c} cgroup ${CGROUP_ROOT}/${c}`);
  }
  return wanted.filter((c) => tree.roots[c]);
}

/** The jail's cgroup, described; nothing is made yet (createCgroup makes it). */
export function planCgroup(tree: CgroupTree, name: string, limits: Limits): JailCgroup {
  return { tree, name, controllers: controllersFor(tree, limits) };
}

export function createCgroup(cg: JailCgroup): void {
  if (cg.tree.version === 2) createCgroupV2(cg);
  else createCgroupV1(cg);
}

/**
 * The shared parent may vanish between our mkdirs (the last jail leaving
 * removes it): then the leaf's mkdir finds no parent (ENOENT), and both are
 * made again, once.
 */
function withParent(make: () => void): void {
  try {
    make();
  } catch (err) {
    if (!(err instanceof JailError) || !err.message.includes('ENOENT')) throw err;
    make();
  }
}

/** v2: mkdir the parent and the leaf, switching the controllers on in each parent on the way. */
function createCgroupV2(cg: JailCgroup): void {
  const names = unique(cg.controllers.map((c) => V2_NAME[c]).filter((n): n is string => !!n));
  const parent = workshopDir(cg.tree, 'cpu');
  enableControllers(CGROUP_ROOT, names);
  withParent(() => {
    makeCgroupDir(parent);
    enableControllers(parent, names);
    makeCgroupDir(leafDir(cg, 'cpu'), cg.name);
  });
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
    withParent(() => {
      makeCgroupDir(parent);
      if (cpuset) inheritCpuset(parent, root, ['cpuset.cpus', 'cpuset.mems']);
      makeCgroupDir(leaf, cg.name);
    });
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
    // two jails starting at once may both make the shared parent: the second finds it made
    if (!jailName && (err as NodeJS.ErrnoException).code === 'EEXIST') return;
    throw new JailError(`could not make the cgroup ${dir}: ${(err as Error).message}`, hintFor(err));
  }
}

/**
 * Writing a PID into cgroup.procs moves that process, all its threads, and
 * every child it forks from then on. Existing memory is not moved along: only
 * what the process allocates afterwards is charged.
 */
export function addProcess(cg: JailCgroup, pid: number): void {
  for (const dir of leafDirs(cg)) writeCgroupFile(join(dir, 'cgroup.procs'), pid);
  const other = cg.tree.version === 2 ? `echo ${pid} > ${CGROUP_ROOT}/{cpu,memory,pids}/${WORKSHOP_CGROUP}/${cg.name}/cgroup.procs` : `echo ${pid} > ${CGROUP_ROOT}/${WORKSHOP_CGROUP}/${cg.name}/cgroup.procs`;
  explain(colour.dim(`    cgroup v${cg.tree.version === 2 ? 1 : 2}: ${other}`));
}
