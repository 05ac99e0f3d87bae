// Step 08, lock 1: masked and read-only paths. The jail's /proc and /sys
// are its own mounts, but many files in them are windows onto the one
// kernel: its memory (/proc/kcore), its keys, its timers, its settings
// (/proc/sys), its firmware. runc hides some (masked: /dev/null or an empty
// read-only tmpfs over them) and makes the rest read-only, after pivot_root,
// while mounting is still allowed: seccomp will forbid mount afterwards, so
// the jail cannot take the covers off again.
import { existsSync, statSync } from 'node:fs';
import { mount, MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_RDONLY, MS_REC, MS_REMOUNT } from '../../lib/libc.ts';
import { showCommand } from '../../lib/output.ts';
import { listDir } from '../../lib/state.ts';

/** runc's and Docker's default maskedPaths, and /proc/interrupts. */
export const MASKED_PATHS = [
  '/proc/acpi', // ACPI tables and, on some kernels, a way to poke them
  '/proc/asound',
  '/proc/interrupts', // per-CPU interrupt counts: a side channel on the host's activity
  '/proc/kcore', // the host kernel's memory, as an ELF core file
  '/proc/keys', // every key of the (un-namespaced) keyrings this user may see
  '/proc/latency_stats',
  '/proc/timer_list', // the host's timers, with addresses and process names
  '/proc/timer_stats',
  '/proc/sched_debug', // every task on the machine, not just the jail's
  '/proc/scsi', // writable: "scsi add-single-device" rescans the host's buses
  '/sys/firmware', // ACPI tables, EFI variables (writable ones brick machines)
  '/sys/devices/virtual/powercap', // energy counters: the Platypus side channel (CVE-2020-8694)
];

/** runc's and Docker's default readonlyPaths: kernel settings and triggers. */
export const READONLY_PATHS = [
  '/proc/bus',
  '/proc/fs',
  '/proc/irq',
  '/proc/sys', // most of /proc/sys is not namespaced: vm.*, kernel.*, fs.* are the host's own settings
  '/proc/sysrq-trigger', // one write reboots, crashes or freezes the host
];

/** A file: /dev/null bound over it. A directory: an empty, read-only tmpfs over it. */
export function maskPath(path: string): void {
  if (statSync(path).isDirectory()) {
    showCommand(`mount -t tmpfs -o ro,nosuid,nodev,noexec tmpfs ${path}`);
    mount('tmpfs', path, 'tmpfs', MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, 'size=0');
  } else {
    showCommand(`mount --bind /dev/null ${path}`);
    mount('/dev/null', path, null, MS_BIND);
  }
}

/**
 * A bind mount of the path onto itself, then a remount of that bind with
 * MS_RDONLY: a bind mount takes its flags only on a remount. The jail still
 * reads its settings; a write fails with EROFS, whatever its capabilities.
 */
export function readonlyPath(path: string): void {
  showCommand(`mount --bind ${path} ${path} && mount -o remount,bind,ro,nosuid,nodev,noexec ${path}`);
  mount(path, path, null, MS_BIND | MS_REC);
  mount(null, path, null, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC);
}

/**
 * Docker masks one more kind of path, one per CPU: the Intel thermal
 * throttling counters, a side channel on what the host's CPUs are doing
 * (only where the driver made them).
 */
export function thermalThrottlePaths(): string[] {
  const cpus = '/sys/devices/system/cpu';
  return listDir(cpus)
    .filter((d) => /^cpu\d+$/.test(d))
    .map((d) => `${cpus}/${d}/thermal_throttle`)
    .filter((p) => existsSync(p));
}

/** Both lists, inside the jail after pivot_root. Paths this kernel lacks are skipped, as runc does. */
export function lockSystemPaths(): { masked: string[]; readonly: string[] } {
  const masked = [...MASKED_PATHS.filter((p) => existsSync(p)), ...thermalThrottlePaths()];
  const readonly = READONLY_PATHS.filter((p) => existsSync(p));
  for (const p of masked) maskPath(p);
  for (const p of readonly) readonlyPath(p);
  return { masked, readonly };
}
