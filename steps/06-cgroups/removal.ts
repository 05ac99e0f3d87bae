// Undoing a cgroup: rmdir, as for any directory — but the kernel refuses to
// remove a cgroup that still has a process in it (EBUSY), so every removal is
// kill-then-rmdir: children first, deepest first, then the leaf, then the
// workshop parent once no other jail uses it. On v2 one write to cgroup.kill
// ends everything inside at once; v1 has no such file, and a fork bomb forks
// faster than we can kill one PID at a time, so pids.max goes to 0 first.
import { existsSync, rmdirSync } from 'node:fs';
import { basename, join } from 'node:path';
import { JailError } from '../../lib/errors.ts';
import { showCommand } from '../../lib/output.ts';
import { readText, subdirs, unique, WORKSHOP_CGROUP, writeCgroupFile } from './cgroupfs.ts';
import { cgroupMounts, leafDirs, workshopDir, type JailCgroup } from './hierarchy.ts';

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
export async function removeCgroup(cg: JailCgroup): Promise<void> {
  await removeLeaves(leafDirs(cg));
  for (const parent of unique(cg.controllers.map((c) => workshopDir(cg.tree, c)))) await removeCgroupDir(parent, true);
}

/**
 * For `npm run clean`: removes every jail's cgroup under build-a-jail in every
 * hierarchy, killing what is left in them, then the parent once it is empty.
 * `which` narrows it to some jails' names (a test must not end other jails).
 */
export async function cleanCgroups(which: (jail: string) => boolean = () => true): Promise<string[]> {
  const parents = unique(cgroupMounts().map(([dir]) => join(dir, WORKSHOP_CGROUP))).filter((dir) => existsSync(dir));
  const names = unique(parents.flatMap((parent) => subdirs(parent).map((leaf) => basename(leaf)))).filter(which);
  const removed: string[] = [];
  for (const name of names) removed.push(...(await removeLeaves(parents.map((parent) => join(parent, name)))));
  for (const parent of parents) if (await removeCgroupDir(parent, true)) removed.push(parent);
  return removed;
}
