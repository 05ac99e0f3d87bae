// Where the workshop keeps what it makes. Never under the repo, which in the
// VM is a synced folder (no device nodes, no ownership, slow).
import { join } from 'node:path';
import { chmodSync, chownSync, mkdirSync, readdirSync, rmSync } from 'node:fs';

export const jailHome = (): string => process.env.JAIL_HOME || '/var/lib/build-a-jail';
export const jailCache = (): string => process.env.JAIL_CACHE || '/var/cache/build-a-jail';

export const rootfsDir = (flavour: 'busybox' | 'debian'): string => join(jailHome(), 'rootfs', flavour);
export const runDir = (): string => join(jailHome(), 'run');

/**
 * Every host resource the workshop creates is named with this prefix
 * (network interfaces, cgroups, iptables comments), so `npm run clean` can
 * find what a killed run left behind. Short, because interface names are at
 * most 15 characters.
 */
export const PREFIX = 'baj';

export function ensureDir(dir: string, mode = 0o755): string {
  mkdirSync(dir, { recursive: true, mode });
  return dir;
}

/**
 * A directory above what a user-namespaced jail writes. Through an idmapped
 * mount the jail's root writes files owned by uid 0 on disk, setuid ones too:
 * no host user may reach them. 0710 with the jail range's group: the jail's
 * own root may cross it (its mounts are made as that uid), nobody else but
 * root. (Docker does the same with its userns-remap root.)
 */
export function guardFromHostUsers(dir: string, jailGid: number): void {
  ensureDir(dir);
  chownSync(dir, 0, jailGid);
  chmodSync(dir, 0o710);
}

/** The names in a directory; none if it does not exist (yet). */
export function listDir(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

/** Whether a process exists (EPERM: it does, but is not ours to signal). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * npm run clean: what a process killed half-way left in `dir` — entries
 * whose name `pattern` matches and whose first group is the PID that was
 * making them (ROOTFS.building-PID, .new-JAIL-PID, …), when that PID is
 * gone. Ours and a live builder's stay. Returns the paths removed.
 */
export function removeStaleStaging(dir: string, pattern: RegExp): string[] {
  const removed: string[] = [];
  for (const entry of listDir(dir)) {
    const pid = Number(pattern.exec(entry)?.[1]);
    if (!pid || pid === process.pid || isAlive(pid)) continue;
    rmSync(join(dir, entry), { recursive: true, force: true });
    removed.push(join(dir, entry));
  }
  return removed;
}
