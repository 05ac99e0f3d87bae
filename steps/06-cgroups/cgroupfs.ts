// The whole API of cgroups is text in files. There is no cgroup syscall to
// learn: mkdir makes a cgroup, one line written into one of its files sets a
// limit (or moves a process), reading a file gives a number or "key value"
// lines. Every write of this step goes through writeCgroupFile, which shows
// the learner the `echo … > …` that does the same by hand.
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { JailError } from '../../lib/errors.ts';
import { showCommand } from '../../lib/output.ts';

/** Where systemd (or the learner) mounts the cgroup filesystems. */
export const CGROUP_ROOT = '/sys/fs/cgroup';
/** Every jail's cgroup lives under this one, so `npm run clean` finds them all. */
export const WORKSHOP_CGROUP = 'build-a-jail';

/** One line into one file. A refused write is the kernel's EINVAL, EBUSY or ENOSPC: say which and why. */
export function writeCgroupFile(path: string, value: string | number, hint?: string): void {
  showCommand(echoCommand(path, value));
  try {
    writeFileSync(path, String(value));
  } catch (err) {
    throw new JailError(`could not write '${value}' to ${path}: ${(err as Error).message}`, hint ?? hintFor(err));
  }
}

/** The shell twin of a write, pasteable as is. */
export const echoCommand = (path: string, value: string | number): string => `echo ${/\s/.test(String(value)) ? `"${value}"` : value} > ${path}`;

export function hintFor(err: unknown): string | undefined {
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

/** A control file's text, or '' if it is not there (a controller this cgroup lacks, a kernel too old). */
export function readText(path: string): string {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch {
    return '';
  }
}

export const readWords = (path: string): string[] => readText(path).split(/\s+/).filter(Boolean);

/** A single number; 'max' (no limit) and a missing file are undefined. */
export function readNumber(path: string): number | undefined {
  const text = readText(path);
  return text === '' || text === 'max' ? undefined : Number(text);
}

/** Files such as cpu.stat and memory.events: one "key value" per line. */
export function readKeyed(path: string): Map<string, number> {
  const map = new Map<string, number>();
  for (const line of readText(path).split('\n')) {
    const [key, value] = line.trim().split(/\s+/);
    if (key && value !== undefined) map.set(key, Number(value));
  }
  return map;
}

/** The child cgroups of a cgroup: its subdirectories (the control files are not directories). */
export function subdirs(dir: string): string[] {
  try {
    return readdirSync(dir, { withFileTypes: true })
      .filter((e) => e.isDirectory())
      .map((e) => join(dir, e.name));
  } catch {
    return [];
  }
}

export const unique = <T>(items: T[]): T[] => [...new Set(items)];
