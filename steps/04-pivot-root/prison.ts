// Step 04: the god process builds the prison from inside. These run in the
// init, in the jail's new mount namespace, before the target exists — the
// lesson's syscall.Mount / syscall.PivotRoot, in runc's order.
import { chmodSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import {
  chdir, makedev, mknod, mount, pivotRoot, umount2, MNT_DETACH, MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_RDONLY, MS_REC, MS_REMOUNT, S_IFCHR, SyscallError,
} from '../../lib/libc.ts';
import type { BindMount } from '../../lib/spec.ts';

/**
 * A mount namespace starts as a copy of the host's, with the host's
 * propagation: a shared mount would send our mounts back to the host, and
 * pivot_root refuses to work on shared mounts (EINVAL).
 */
export function makeMountsPrivate(): void {
  mount(null, '/', null, MS_REC | MS_PRIVATE);
}

/** pivot_root needs the new root to be a mount point; a bind mount onto itself makes any directory one. */
export function bindRootfsOntoItself(rootfs: string): void {
  mount(rootfs, rootfs, null, MS_BIND | MS_REC);
}

export function bindIntoRootfs(rootfs: string, b: BindMount): void {
  const target = join(rootfs, b.target);
  mount(b.source, target, null, MS_BIND);
  // a bind mount takes MS_RDONLY only on a remount
  if (b.readonly) mount(null, target, null, MS_REMOUNT | MS_BIND | MS_RDONLY);
}

/** A proc of our own: it shows the processes of the PID namespace that mounts it. */
export function mountProc(rootfs: string): void {
  mount('proc', join(rootfs, 'proc'), 'proc', MS_NOSUID | MS_NODEV | MS_NOEXEC);
}

/**
 * sysfs read-only: a jail may look at devices, not reconfigure the host's.
 * The kernel lets a user namespace mount sysfs only with its own network
 * namespace; otherwise a read-only bind of the host's is what runc does too.
 */
export function mountSys(rootfs: string): void {
  const target = join(rootfs, 'sys');
  const ro = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC;
  try {
    mount('sysfs', target, 'sysfs', ro);
  } catch (err) {
    if (!(err instanceof SyscallError) || err.code !== 'EPERM') throw err;
    mount('/sys', target, null, MS_BIND | MS_REC);
    mount(null, target, null, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC);
  }
}

/** The device nodes every program may expect, and nothing else: not the host's disks. */
export const DEVICES: Record<string, [number, number]> = {
  null: [1, 3],
  zero: [1, 5],
  full: [1, 7],
  random: [1, 8],
  urandom: [1, 9],
  tty: [5, 0],
};

/**
 * A minimal /dev. The lesson mounts devtmpfs here — but devtmpfs is the
 * host's one device directory, with every disk in it: root in the jail
 * could open /dev/vda and read the host's filesystem. So: a fresh tmpfs with
 * the six harmless nodes, a devpts instance of our own (the jail's
 * terminals, not the host's), /dev/shm, and the usual symlinks.
 */
export function mountDev(rootfs: string): void {
  const dev = join(rootfs, 'dev');
  mount('tmpfs', dev, 'tmpfs', MS_NOSUID | MS_NOEXEC, 'mode=755,size=65536k');
  for (const [name, [major, minor]] of Object.entries(DEVICES)) makeDeviceNode(join(dev, name), name, major, minor);
  mkdirSync(join(dev, 'pts'));
  mountDevpts(join(dev, 'pts'));
  symlinkSync('pts/ptmx', join(dev, 'ptmx'));
  mkdirSync(join(dev, 'shm'));
  mount('shm', join(dev, 'shm'), 'tmpfs', MS_NOSUID | MS_NODEV | MS_NOEXEC, 'mode=1777,size=65536k');
  symlinkSync('/proc/self/fd', join(dev, 'fd'));
  ['stdin', 'stdout', 'stderr'].forEach((name, fd) => symlinkSync(`/proc/self/fd/${fd}`, join(dev, name)));
}

/** A host device the learner asked for (--device), bind-mounted into the jail's /dev under the same name. */
export function passDevice(rootfs: string, hostPath: string): void {
  const target = join(rootfs, 'dev', basename(hostPath));
  writeFileSync(target, '');
  mount(hostPath, target, null, MS_BIND);
}

/** mknod, or — in a user namespace, where mknod is forbidden — a bind mount of the host's node. */
function makeDeviceNode(path: string, name: string, major: number, minor: number): void {
  try {
    mknod(path, S_IFCHR | 0o666, makedev(major, minor));
    chmodSync(path, 0o666); // mknod's mode passes through the umask; /dev/null must be writable by all
  } catch (err) {
    if (!(err instanceof SyscallError) || err.code !== 'EPERM') throw err;
    writeFileSync(path, '');
    mount(`/dev/${name}`, path, null, MS_BIND);
  }
}

/** newinstance: a devpts of our own, so ptys opened inside are not the host's. */
function mountDevpts(target: string): void {
  const flags = MS_NOSUID | MS_NOEXEC;
  try {
    mount('devpts', target, 'devpts', flags, 'newinstance,ptmxmode=0666,mode=0620,gid=5');
  } catch {
    // gid 5 (tty) may be unmapped in a user namespace
    mount('devpts', target, 'devpts', flags, 'newinstance,ptmxmode=0666,mode=0620');
  }
}

/**
 * pivot_root(new, old) makes `new` the root of the whole mount namespace and
 * moves the old root to `old`; then we detach the old root, and with it every
 * path to the host's files. (chroot only changed where "/" resolves — step 02.)
 * The lesson passes a directory inside the rootfs as `old`. runc's trick needs
 * none, so a read-only rootfs — or one we may not write, in a user namespace —
 * works too: pivot_root(".", ".") stacks the old root on top of the new one,
 * and a lazy unmount of "." peels it off.
 */
export function pivotInto(rootfs: string): void {
  chdir(rootfs);
  pivotRoot('.', '.');
  umount2('.', MNT_DETACH);
  chdir('/');
}
